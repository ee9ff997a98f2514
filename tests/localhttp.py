"""A small HTTP server on 127.0.0.1 for the download tests: no test ever touches the internet."""

import http.server
import threading


class LocalServer:
    """Serves `files` (name -> bytes) at prefix + name on 127.0.0.1, at a free port, in a
    thread.

    - requests: the URL paths asked for, in order (to prove that a cache was used)
    - truncate: names whose connection breaks after half the bytes
    - base: "http://127.0.0.1:PORT"
    """

    def __init__(self, files, prefix="/"):
        self.files, self.requests, self.truncate = files, [], set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                name = self.path.removeprefix(prefix)
                if not self.path.startswith(prefix) or name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if name in outer.truncate else data)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
