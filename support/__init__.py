"""Support: the chat widget on every page, its websocket, the staff inbox
and unread-reply emails. Asks billing for balances and generation for jobs."""
