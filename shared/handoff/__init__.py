"""Human handoff and opt-out (issue 12): who answers a user (the bot, a person, or nobody because the user opted
out), the switches between them, operator messages, and the business's signed webhook."""
