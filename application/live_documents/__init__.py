"""Live documents: the documents this process has open, their editors, their saving and
awareness. The ``/yjs`` endpoint (api/yjs/endpoint.py) speaks the wire protocol and hands
what editors send here."""
