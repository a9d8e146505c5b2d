"""Multi-agent workflows on the priority queue (issue 12): a workflow is defined in admin as steps
over agent types, by stage; the steps of a stage run in parallel, each a task of the queue (its
priority, quota, audit and GPU policy applying through the one pipeline), and a later stage's
prompts are made of the earlier stages' outputs. The demo seeds ``discharge-summary``: Clinical,
Documentation and Billing drafts in parallel, then a Documentation merge.

(its models: apps.inference.workflow_models, Workflow, WorkflowStep, WorkflowRun, WorkflowRunStep)
prompts.py  placeholders of a step's prompt, and what an admin's steps get wrong
runs.py     list, start, read, cancel (the client's verbs); the demo's workflow
advance.py  a run moved along from the queue's after-commit hook (and the minute schedule)
shapes.py   the run object and the websocket's ``workflow.update`` frame
"""
