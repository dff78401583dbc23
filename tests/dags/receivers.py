"""Local notification receivers on 127.0.0.1: a minimal SMTP server and an HTTP webhook endpoint that keep what they get."""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server:
    def __init__(self, server):
        self.server = server
        self.received: list = []
        server.received = self.received
        threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: greeting, EHLO/HELO, MAIL, RCPT, DATA, QUIT; no TLS, no auth."""

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 localhost test SMTP")
        recipients: list[str] = []
        while line := self.rfile.readline():
            command = line.decode().strip()
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 localhost")
            elif verb == "MAIL":
                recipients = []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip(" <>"))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with .")
                raw = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    raw += chunk[1:] if chunk.startswith(b"..") else chunk
                message = email.message_from_bytes(raw, policy=email.policy.default)
                self.server.received.append({"to": recipients, "message": message})
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 OK")


class SmtpReceiver(_Server):
    def __init__(self):
        super().__init__(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler))

    def texts(self) -> list[tuple[str, str]]:
        """(subject, plain body) of each message received."""
        out = []
        for item in self.received:
            message = item["message"]
            part = message.get_body(preferencelist=("html", "plain"))
            out.append((str(message["Subject"]), part.get_content() if part else ""))
        return out


class _WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append({"headers": dict(self.headers), "json": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


class WebhookReceiver(_Server):
    def __init__(self):
        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), _WebhookHandler))
