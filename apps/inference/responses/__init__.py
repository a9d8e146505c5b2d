"""OpenAI's Responses API translated onto chat completions, for model servers that lack it (all of
medai's: llama.cpp, vLLM, TGI, Ollama speak chat completions).

    request.py   CreateResponse → a chat request (validated by the chat validator, the one
                 validate step) and what the Response object echoes; a 400 names the Responses
                 field (``input[2].content``, ``tools[0].name``), never the chat field it became
    output.py    a chat completion → the Response object (message and function_call items, usage)
    events.py    a chat stream's chunks → the Responses events (response.created …
                 response.completed, with sequence numbers)
    store.py     stored responses (``store: true``): the request's own record (InferenceTask,
                 ``kind="response"``) keeps the conversation and the Response, encrypted, until
                 retention ends; read and deleted by their owner only

The request runs through the same pipeline as a chat completion (``pipeline.plan.plan_response``):
authenticate → authorize (scope ``chat``) → validate → rate limit → quota reserve → route → admit →
dispatch → reconcile → audit → metrics. Only the shapes differ; the translation costs
microseconds (bench/responses_overhead.py).
"""
