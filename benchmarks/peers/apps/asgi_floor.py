"""asgi-floor: the ceiling of any Python server on uvicorn. A bare ASGI app that reads the whole body, parses
its JSON (the standard library's json) and answers a constant: no framework, validation, model or log."""

import json

_HEADERS = [(b"content-type", b"application/json")]
_ONE = b'{"prediction":0.0}'
_MANY = b'{"predictions":[0.0]}'


async def app(scope, receive, send):
    if scope["type"] != "http":  # lifespan: nothing to start
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    json.loads(b"".join(chunks))
    answer = _ONE if scope["path"] == "/predict" else _MANY
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})
