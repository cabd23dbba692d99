"""Work queues: task names and queues, the accepted-work records, the webhook dedupe claims, publishing."""
