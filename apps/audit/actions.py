"""The audit trail's action names: one catalogue, so that every app writes (and the auditor filters
on) the same words. Outcomes are ``AuditEvent.Outcome``: success, failure, denied, cancelled."""

from __future__ import annotations

# identity (apps/accounts)
LOGIN = "auth.login"  # success; failure (bad credentials); denied (not a member of the location)
LOGIN_LOCKOUT = "auth.lockout"  # too many failures: the account or address is locked out
REFRESH = "auth.refresh"  # success; failure (invalid, expired, no longer matching a user)
REFRESH_REUSED = "auth.refresh_reused"  # a refresh token presented again after it was rotated
LOGOUT = "auth.logout"
UNAUTHENTICATED = "auth.unauthenticated"  # any 401
FORBIDDEN = "auth.forbidden"  # any 403
APIKEY_CREATE = "apikey.create"
APIKEY_USE = "apikey.use"  # at most once a minute per key (with its last-used time)
APIKEY_ROTATE = "apikey.rotate"
APIKEY_REVOKE = "apikey.revoke"

# governance (apps/accounts/governance*)
LIMIT_REJECTED = "limit.rejected"  # a 429 from a rate limit or a quota

# inference (apps/inference)
INFERENCE = "inference.complete"  # one per inference, sync or async, streamed or not
TASK_SUBMIT = "inference.submit"
TASK_BATCH_SUBMIT = "inference.submit_batch"
TASK_CANCEL = "inference.cancel"
TASK_RETRY = "inference.retry"  # a failed, cancelled or expired task queued again as a new one
TASK_STATUS = "inference.read_status"  # a task's or batch's status
TASK_RESULT = "inference.read_result"  # a task's result (or a stored response): the read of PHI
RESPONSE_DELETE = "inference.delete_response"  # a stored response deleted by its owner
HISTORY_READ = "inference.read_history"  # the caller's stored exchanges (a page, a search, a conversation)
FEEDBACK_CREATE = "feedback.create"  # a rating of an exchange (made or changed); never the comment's text
FEEDBACK_EXPORT = "feedback.export"  # feedback exported for training (rows, filters, with content or not, purpose)

# the Files and Batch API (apps/inference/filebatch)
FILE_UPLOAD = "file.upload"
FILE_READ = "file.read"  # a file's content downloaded: the read of PHI
FILE_INFO = "file.info"  # a file's metadata, or a page of the file list
FILE_DELETE = "file.delete"
FILE_PURGE = "file.purge"  # files past their retention lost their content (a count)
BATCH_CREATE = "batch.create"
BATCH_CANCEL = "batch.cancel"
BATCH_FINISH = "batch.finish"  # a batch's outcome, its output and error files written

# multi-agent workflows (apps/inference/workflows.py)
WORKFLOW_RUN_CREATE = "workflow.run.create"  # a run started (its first stage queued)
WORKFLOW_RUN_READ = "workflow.run.read"  # a run's status and result read: the read of PHI
WORKFLOW_RUN_LIST = "workflow.run.list"  # a page of runs listed (status and steps, no result)
WORKFLOW_RUN_CANCEL = "workflow.run.cancel"
WORKFLOW_RUN_FINISH = "workflow.run.finish"  # a run's outcome (completed, failed, cancelled)
WORKFLOW_LIST = "workflow.list"  # the runnable workflows listed

# websockets (apps/accounts/websocket.py): an accepted socket's open, and its close (code, duration)
WS_OPEN = "ws.open"
WS_CLOSE = "ws.close"

# admin (Django admin)
ADMIN_LOGIN = "admin.login"
ADMIN_LOGOUT = "admin.logout"
ADMIN_ADD = "admin.add"
ADMIN_CHANGE = "admin.change"
ADMIN_DELETE = "admin.delete"
ADMIN_ACTION = "admin.action"

# break-glass (apps/accounts): break_glass.grant, .use, .revoke, .expire
BREAK_GLASS = "break_glass"
BREAK_GLASS_STEPS = ("grant", "use", "revoke", "expire")

# the audit trail itself
AUDIT_READ = "audit.read"  # GET /v1/audit/events
AUDIT_EXPORT = "audit.export"  # a CSV export from admin
AUDIT_VERIFY = "audit.verify"  # a run of audit_verify (its outcome)
