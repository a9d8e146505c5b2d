"""OpenAI's Files and Batch API on medai's priority queue (issue 12).

(its models: apps.inference.filebatch_models, StoredFile with encrypted FileParts, FileBatch)
jsonl.py   the request-input format, checked line by line at upload
files.py   upload, list, read, download, delete, retention of files
batches.py create, read, list, cancel a batch (the client's verbs)
feed.py    the lines fed to the queue in parts, expiry, the output and error files
shapes.py  OpenAI's Batch object and the websocket's ``batch.update`` frame
"""
