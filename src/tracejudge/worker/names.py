"""The names producer and worker agree on: queues and the task name."""

QUEUE_GATE = "tracejudge.gate"
QUEUE_ONLINE = "tracejudge.online"
QUEUES = (QUEUE_GATE, QUEUE_ONLINE)
TASK_EVALUATE = "tracejudge.evaluate_trace"
TASK_EVALUATE_SESSION = "tracejudge.evaluate_session"
