"""A stand-in for an OpenAI-compatible teacher server (a real HTTP server on 127.0.0.1) that
speaks vLLM's protocol where the black-box teacher relies on it: ``GET /v1/models``,
``POST /tokenize`` with a given tokenizer, and one-token ``POST /v1/completions`` whose
sampled token is chosen by the test. Like vLLM's OpenAI server, the completion text is
the detokenized token (special tokens skipped, so an end token is ""; a partial UTF-8
byte sequence is U+FFFD), and with ``logprobs`` set, ``logprobs.tokens`` holds the token
as text, or as ``"token_id:<id>"`` when the request sets ``return_tokens_as_token_ids``
(unless ``token_ids=False``: a server that ignores that field)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAIStandIn:
    def __init__(
        self,
        tokenizer,
        choose: Callable[[list[int], int], int],
        *,
        name: str = "teacher",
        token_ids: bool = True,
    ) -> None:
        """``choose(prompt_ids, choice_index)`` is the token the server 'samples'."""
        self.requests: list[dict] = []
        server = self

        def completion(body: dict) -> dict:
            prompt = [int(t) for t in body["prompt"]]
            choices = []
            for j in range(int(body.get("n") or 1)):
                tid = choose(prompt, j)
                text = tokenizer.decode([tid], skip_special_tokens=True)
                logprobs = None
                if body.get("logprobs") is not None:
                    as_id = token_ids and bool(body.get("return_tokens_as_token_ids"))
                    token = f"token_id:{tid}" if as_id else tokenizer.decode([tid])
                    logprobs = {
                        "text_offset": [0],
                        "token_logprobs": [-1.0],
                        "tokens": [token],
                        "top_logprobs": [{token: -1.0}],
                    }
                end = tid == tokenizer.eos_token_id
                choices.append(
                    {
                        "index": j,
                        "text": text,
                        "logprobs": logprobs,
                        "finish_reason": "stop" if end else "length",
                        "stop_reason": None,
                    }
                )
            return {"id": "cmpl-standin", "object": "text_completion", "model": name, "choices": choices}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._json({"object": "list", "data": [{"id": name, "object": "model"}]})
                self.send_error(404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, **body})
                if self.path == "/tokenize":
                    ids = tokenizer.encode(
                        body["prompt"], add_special_tokens=body.get("add_special_tokens", True)
                    )
                    return self._json({"tokens": ids, "count": len(ids), "max_model_len": 4096})
                if self.path == "/v1/completions":
                    return self._json(completion(body))
                self.send_error(404)

            def _json(self, obj):
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
