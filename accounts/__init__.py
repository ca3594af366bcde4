"""Accounts: allauth glue, the account page, API keys and the free-credit
grant on a verified sign-up. Imports billing only (balances are billing's)."""
