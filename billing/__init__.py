"""Billing: the credit ledger and every balance change (ledger.py), reads of
balances and orders (selectors.py), credit packs, Stripe Checkout, webhooks,
refunds and disputes. The lowest layer: imports no other app."""
