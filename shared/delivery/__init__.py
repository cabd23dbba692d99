"""Delivery: the outbox, sends to Infobip, delivery reports and due reminders."""
