"""The one pipeline every request to a model server passes, from any entry point (sync chat,
streamed or not, the async API's submit and batches, the worker that runs their tasks, and every
later endpoint), in this order (``steps.STEPS``; DESIGN.md "Layers and the pipeline"):

    authenticate   accounts      once per HTTP request → Principal     gate.authenticate / authenticated
    authorize      accounts      the action's scope                    gate.authorize
    validate       inference     a plain dict → a validated request    gate.validate_* (apps/inference/validation/)
    rate limit     accounts      token buckets, in-flight cap          gate.limit_and_reserve (apps/accounts/governance/)
    quota reserve  accounts      a hold per request (same script)      gate.limit_and_reserve
    route          inference     model or agent type → candidates      gate.route (apps/inference/router.py)
    admit          gpu           GPU policy, slots, a bounded wait     dispatch.admit
    dispatch       inference     the call, retries, breaker, failover  dispatch.call_with_failover (run.py)
    reconcile      accounts      real usage replaces the reservation   record.reconcile*
    audit          audit         one event per inference               record.* (apps/inference/auditing.py)
    metrics        each          counters and histograms               record.* (apps/inference/metrics.py)

Modules: ``steps`` (the names and a tracing hook), ``gate`` (the steps before a backend),
``plan`` (the ChatPlan a request carries through: ``plan_chat``, ``plan_tasks``, ``task_plan``),
``run`` (``complete_chat``, ``open_chat_stream``, ``relay_stream``), ``record`` (reconcile, audit,
metrics). Services and the queue take the Principal and validated data, never a header or a body.
"""
