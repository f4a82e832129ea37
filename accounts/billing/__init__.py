"""Billing: plans, subscriptions, the limits a plan sets and their enforcement (``quotas``), and Stripe.

Models live in the accounts app (``accounts.billing.models``, imported by ``accounts.models``). A user with
no subscription, or whose subscription ended, is on the default plan (Free, seeded by a migration).
"""
