"""A tiny HTTP/1.1 service for the gateway demo: `python3 hello.py PORT NAME`.

GET /healthz -> 200; anything else -> a greeting naming the instance and the request id it got."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok\n"
        else:
            body = (json.dumps({"hello": "from " + sys.argv[2], "path": self.path,
                                "request_id": self.headers.get("X-Request-Id"),
                                "forwarded_for": self.headers.get("X-Forwarded-For")}) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hello).serve_forever()
