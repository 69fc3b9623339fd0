"""The labeled detection corpus: documents generated from a seed, with the span of every
finding the built-in pack should report.

Nothing here is a real secret or a real person: keys are assembled from public prefixes and
seeded random bodies (split so that no line of this file looks like a key), names and numbers
are invented, card numbers are generated to pass Luhn, phone numbers use fictional ranges.

Every true positive is placed into one of several carriers people actually send to AI APIs:
source code, .env files, JSON, YAML, log lines, HTTP requests (headers and form bodies) and
chat-style prompts. Hard negatives (documentation example keys, UUIDs, hashes, base64 blobs,
version strings, random IDs in logs, numbers that fail Luhn, SSNs in invalid ranges, dates
without a birth keyword, placeholders, public keys, ...) go into the same carriers with no
label: any finding in them is a false positive.

`build(seed)` returns the documents; tests/test_detection_corpus.py and bench/detection.py
score the engine on them (precision, recall and F1 per detector, per class and overall).
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass
class Doc:
    name: str
    carrier: str
    text: bytes
    labels: list[tuple[str, int, int]] = field(default_factory=list)   # (detector, start, end)


def rand(r: random.Random, alphabet: str, n: int) -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def _b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _luhn(prefix: str, length: int, r: random.Random) -> str:
    body = prefix + rand(r, string.digits, length - len(prefix) - 1)
    for check in string.digits:
        total = 0
        for i, ch in enumerate(reversed(body + check)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return body + check
    raise AssertionError


def _luhn_broken(r: random.Random) -> str:
    """A Visa-shaped number whose check digit is wrong."""
    good = _luhn("4", 16, r)
    return good[:-1] + str((int(good[-1]) + 1) % 10)


def _iban(r: random.Random, country: str, length: int) -> str:
    bban = rand(r, string.digits, length - 4)
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def _group4(text: str) -> str:
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))


# ------------------------------------------------------------------------------ true positives
# detector -> (value maker, key names that fit it). A value maker returns the exact text of
# the finding. Key names carry the keywords some detectors require (aws, cohere, dob, ...).

Maker = Callable[[random.Random], str]


def _pem(r: random.Random, kind: str) -> str:
    head = "-----" + "BEGIN " + (kind + " " if kind else "") + "PRIVATE " + "KEY-----\n"
    return head + "".join(rand(r, B64, 64) + "\n" for _ in range(r.randint(3, 12)))


def _jwt(r: random.Random) -> str:
    header = {"alg": r.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    payload = {"sub": rand(r, ALNUM, 10), "iat": r.randint(10**9, 2 * 10**9)}
    return ".".join([_b64url(header), _b64url(payload), rand(r, URLSAFE, 43)])


def _dob(r: random.Random) -> str:
    y, m, d = r.randint(1935, 2005), r.randint(1, 12), r.randint(1, 28)
    months = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]
    return r.choice([f"{y}-{m:02d}-{d:02d}", f"{m:02d}/{d:02d}/{y}", f"{d}.{m}.{y}",
                     f"{months[m - 1]} {d}, {y}", f"{d} {months[m - 1][:3]} {y}"])


def _ipv6(r: random.Random) -> str:
    groups = [f"{r.randint(0, 0xffff):x}" for _ in range(8)]
    groups[0] = "2001"
    groups[1] = f"{r.randint(0x100, 0xfff):x}"
    if r.random() < 0.5:
        return ":".join(groups)
    return ":".join(groups[:3]) + "::" + ":".join(groups[6:])


POSITIVES: dict[str, tuple[Maker, tuple[str, ...]]] = {
    "secret.aws_access_key_id": (lambda r: "AK" + "IA" + rand(r, B32, 16), ("aws_access_key_id", "AccessKeyId", "key")),
    "secret.aws_secret_access_key": (lambda r: rand(r, B64, 37) + "a1Z", ("aws_secret_access_key", "AWS_SECRET", "SecretAccessKey")),
    "secret.github_token": (lambda r: "gh" + r.choice("pousr") + "_" + rand(r, ALNUM, 36), ("GITHUB_TOKEN", "token", "gh_auth")),
    "secret.openai_api_key": (lambda r: "sk-" + r.choice(["proj-", "svcacct-", ""]) + rand(r, ALNUM, 48), ("OPENAI_API_KEY", "api_key", "openai")),
    "secret.anthropic_api_key": (lambda r: "sk-" + "ant-api03-" + rand(r, URLSAFE, 93) + "AA", ("ANTHROPIC_API_KEY", "x-api-key")),
    "secret.slack_token": (lambda r: "xo" + "xb-" + rand(r, string.digits, 12) + "-" + rand(r, string.digits, 13) + "-" + rand(r, ALNUM, 24), ("SLACK_BOT_TOKEN", "slack")),
    "secret.google_api_key": (lambda r: "AI" + "za" + rand(r, URLSAFE, 35), ("GOOGLE_API_KEY", "GEMINI_API_KEY", "key")),
    "secret.stripe_key": (lambda r: r.choice(["sk", "rk"]) + "_live_" + rand(r, ALNUM, 24), ("STRIPE_SECRET_KEY", "stripe")),
    "secret.jwt": (_jwt, ("id_token", "Authorization", "jwt")),
    "secret.private_key": (lambda r: _pem(r, r.choice(["RSA", "EC", "OPENSSH", ""])), ("private_key", "key")),
    "secret.url_password": (lambda r: r.choice(["postgres", "mysql", "mongodb+srv", "redis", "amqp"]) + "://app:" + rand(r, ALNUM, 16) + "@db" + str(r.randint(1, 9)) + ".internal.example", ("DATABASE_URL", "dsn", "broker_url")),
    "pii.email": (lambda r: rand(r, string.ascii_lowercase, 6) + "." + rand(r, string.ascii_lowercase, 7) + "@" + r.choice(["example.com", "mail.example.org", "corp.example.net"]), ("email", "contact", "reply_to")),
    "pii.payment_card": (lambda r: r.choice([lambda: _luhn("4", 16, r), lambda: _group4(_luhn(r.choice(["51", "52", "53", "54", "55"]), 16, r)), lambda: _luhn("37", 15, r)])(), ("card_number", "pan", "cc")),
    "pii.us_ssn": (lambda r: f"{r.randint(1, 665):03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}", ("ssn", "social_security_number")),
    "pii.phone": (lambda r: r.choice([f"+1 415 555 {r.randint(1000, 9999)}", f"(415) 555-{r.randint(1000, 9999)}", f"+44 20 7946 {r.randint(0, 999):04d}"]), ("phone", "tel", "mobile")),
    "pii.iban": (lambda r: r.choice([lambda: _group4(_iban(r, "DE", 22)), lambda: _iban(r, "GB", 22).replace("GB", "GB", 1), lambda: _iban(r, "FR", 27)])(), ("iban", "bank_account")),
    "secret.gcp_service_account": (lambda r: rand(r, HEX, 40), ("gcp",)),
    "secret.azure_storage_key": (lambda r: rand(r, B64, 86) + "==", ("AZURE_STORAGE_CONNECTION_STRING",)),
    "secret.gitlab_token": (lambda r: "gl" + "pat-" + rand(r, URLSAFE, 20), ("GITLAB_TOKEN", "PRIVATE-TOKEN")),
    "secret.bitbucket_app_password": (lambda r: "AT" + "BB" + rand(r, ALNUM, 32), ("BITBUCKET_APP_PASSWORD",)),
    "secret.huggingface_token": (lambda r: "hf" + "_" + rand(r, string.ascii_letters, 34), ("HF_TOKEN", "huggingface_token")),
    "secret.groq_api_key": (lambda r: "gs" + "k_" + rand(r, ALNUM, 52), ("GROQ_API_KEY",)),
    "secret.cohere_api_key": (lambda r: rand(r, ALNUM, 39) + "7", ("COHERE_API_KEY", "cohere_key", "CO_API_KEY")),
    "secret.mistral_api_key": (lambda r: rand(r, ALNUM, 31) + "Q", ("MISTRAL_API_KEY", "mistral_key")),
    "secret.slack_webhook": (lambda r: "hooks" + ".slack.com/services/T" + rand(r, string.ascii_uppercase + string.digits, 9) + "/B" + rand(r, string.ascii_uppercase + string.digits, 10) + "/" + rand(r, ALNUM, 24), ("SLACK_WEBHOOK_URL", "webhook")),
    "secret.twilio_api_key": (lambda r: "S" + "K" + rand(r, HEX, 32), ("TWILIO_API_KEY", "twilio_sid")),
    "secret.sendgrid_api_key": (lambda r: "S" + "G." + rand(r, URLSAFE, 22) + "." + rand(r, URLSAFE, 43), ("SENDGRID_API_KEY",)),
    "pii.us_itin": (lambda r: f"9{r.randint(0, 99):02d}-{r.choice([r.randint(70, 88), r.randint(50, 65)])}-{r.randint(1, 9999):04d}", ("itin", "taxpayer_id")),
    "pii.ipv4_address": (lambda r: f"{r.randint(11, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}", ("client_ip", "remote_addr", "ip")),
    "pii.ipv6_address": (_ipv6, ("client_ip", "addr")),
    "pii.date_of_birth": (_dob, ("date_of_birth", "dob", "birthdate")),
}

# Values some carriers frame themselves (a connection string, a JSON key file).
_FRAMES: dict[str, Callable[[random.Random, str], tuple[str, str]]] = {
    "secret.gcp_service_account": lambda r, v: (
        '{"type": "service_account", "project_id": "demo-' + rand(r, HEX, 4) + '", "private' + '_key_id": "', '"}'),
    "secret.azure_storage_key": lambda r, v: (
        "DefaultEndpointsProtocol=https;AccountName=acct" + rand(r, HEX, 4) + ";Account" + "Key=",
        ";EndpointSuffix=core.windows.net"),
    "secret.slack_webhook": lambda r, v: ("https://", ""),
}


def _carriers(r: random.Random, name: str, value: str) -> list[tuple[str, str, str]]:
    """(carrier, text before, text after) for `value` under the key `name`."""
    jv = json.dumps(value)[1:-1]
    if jv != value:               # only JSON-safe values go into JSON carriers
        return [("env", f"{name.upper()}=", "\n"),
                ("code", f'{name.lower()} = """', '"""\n')]
    req = "req_" + rand(r, HEX, 16)
    return [
        ("code", f'{name.lower()} = "', '"\n'),
        ("env", f"{name.upper()}=", "\n"),
        ("json", '{"' + name + '": "', '", "retries": 3}'),
        ("yaml", f"{name}: ", "\n"),
        ("log", f"2026-12-03T10:{r.randint(10, 59)}:07.123Z INFO {req} {name}=", " status=200\n"),
        ("http", f"POST /v1/items HTTP/1.1\r\nHost: api.example.com\r\nX-{name.title()}: ",
         "\r\nContent-Length: 0\r\n\r\n"),
        ("form", f"a=1&{name}=", "&b=2"),
        ("chat", '{"messages": [{"role": "user", "content": "here is my ' + name + ': ',
         '. can you check why it fails?"}]}'),
    ]


def positives(r: random.Random, per_detector: int) -> list[Doc]:
    docs = []
    for detector, (make, names) in POSITIVES.items():
        for i in range(per_detector):
            value = make(r)
            name = r.choice(names)
            carrier, before, after = r.choice(_carriers(r, name, value))
            if detector in _FRAMES:
                before, after = _FRAMES[detector](r, value)
                before = name + " " + before if not before.startswith("{") else before
                carrier = "frame"
            if detector == "secret.private_key":
                after = "-----END PRIVATE KEY-----\n" + after
            text = (before + value + after).encode()
            start = len(before.encode())
            docs.append(Doc(f"{detector}#{i}", carrier, text,
                            [(detector, start, start + len(value.encode()))]))
    return docs


# ------------------------------------------------------------------------------ hard negatives

def _negatives(r: random.Random) -> list[tuple[str, str]]:
    """(kind, text) that must give no finding at all."""
    sha1, sha256 = rand(r, HEX, 40), rand(r, HEX, 64)
    return [
        ("aws-doc-id", "aws_access_key_id = AK" + "IAIOSFODNN7EXAMPLE"),
        ("aws-doc-secret", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"),
        ("uuid", f"request_id={uuid.UUID(int=r.getrandbits(128), version=4)}"),
        ("uuid-json", json.dumps({"id": str(uuid.UUID(int=r.getrandbits(128), version=4))})),
        ("git-sha1", f"commit {sha1} (aws secret rotation)"),
        ("sha256", f"sha256:{sha256}"),
        ("md5-mistral", f"mistral model checksum md5={rand(r, HEX, 32)}"),
        ("base64-blob", "data:application/octet-stream;base64," + rand(r, B64, 76)),
        ("base64-lines", "\n".join(rand(r, B64, 76) for _ in range(3))),
        ("version", f"python {r.randint(2, 3)}.{r.randint(0, 12)}.{r.randint(0, 9)} on linux"),
        ("version-4", f"version {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 99)}"),
        ("semver-v", f"release v{r.randint(1, 20)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}"),
        ("oid", "oid 1.3.6.1.4.1." + str(r.randint(100, 9999))),
        ("log-ids", f"trace_id={rand(r, HEX, 32)} span_id={rand(r, HEX, 16)} pod=api-{rand(r, HEX, 9)}-{rand(r, string.ascii_lowercase, 5)}"),
        ("log-ts", f"2026-12-03T10:20:30.{r.randint(100, 999)}Z took {r.randint(1, 999)}ms ts={r.randint(10**12, 2 * 10**12)}"),
        ("card-no-luhn", "card " + _luhn_broken(r)),
        ("card-unknown-issuer", "n " + _luhn("9", 16, r)),
        ("float-vector", json.dumps({"embedding": [r.random() for _ in range(4)]})),
        ("ssn-area-000", f"SSN 000-{r.randint(10, 99)}-{r.randint(1000, 9999)}"),
        ("ssn-area-666", f"SSN 666-{r.randint(10, 99)}-{r.randint(1000, 9999)}"),
        ("ssn-area-9xx", f"SSN 9{r.randint(0, 99):02d}-{r.randint(10, 49)}-{r.randint(1000, 9999)}"),
        ("ssn-group-00", f"SSN {r.randint(100, 599)}-00-{r.randint(1000, 9999)}"),
        ("itin-group-93", f"ITIN 9{r.randint(0, 99):02d}-93-{r.randint(1000, 9999)}"),
        ("phone-invalid", "+1 123 456 7890"),
        ("order-number", f"order #{r.randint(10**9, 10**10)} shipped"),
        ("date-no-keyword", f"released {r.randint(1990, 2020)}-0{r.randint(1, 9)}-1{r.randint(0, 9)} to all users"),
        ("dob-future", "DOB: 2199-01-01"),
        ("placeholder-openai", "OPENAI_API_KEY=sk-" + "x" * 48),
        ("placeholder-github", "GITHUB_TOKEN=gh" + "p_" + "X" * 36),
        ("placeholder-url", "postgres://user:password@localhost:5432/db"),
        ("template-url", "DATABASE_URL=postgres://app:${DB_PASSWORD}@db/x"),
        ("public-key", "-----BEGIN " + "PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----"),
        ("certificate", "-----BEGIN " + "CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----"),
        ("jwt-garbage", "eyJ" + rand(r, URLSAFE, 30) + ".eyJ" + rand(r, URLSAFE, 30) + "." + rand(r, URLSAFE, 20)),
        ("retina-asset", "src=icon@2x.png"),
        ("cpp-scope", "std::vector<int> v; Foo::bar(); a::b"),
        ("mac-address", f"mac {':'.join(rand(r, HEX, 2) for _ in range(6))}"),
        ("time", f"at {r.randint(10, 23)}:{r.randint(10, 59)}:{r.randint(10, 59)}"),
        ("iban-bad-check", "IBAN DE00 " + _group4(rand(r, string.digits, 18))),
        ("twilio-account-sid", "AC" + rand(r, HEX, 32)),
        ("short-tokens", "gh" + "p_" + rand(r, ALNUM, 20) + " xo" + "xb-1 AI" + "za" + rand(r, ALNUM, 10)),
        ("prose", "The quick brown fox jumps over the lazy dog; 42 items at 3.50 each, born to run."),
    ]


def negatives(r: random.Random, copies: int) -> list[Doc]:
    docs = []
    for i in range(copies):
        for kind, text in _negatives(r):
            carrier, before, after = r.choice(
                [("plain", "", "\n"), ("log", "2026-12-03T11:00:00Z WARN ", "\n"),
                 ("chat", '{"role": "user", "content": ' + '"', '"}')])
            if carrier == "chat":
                text = json.dumps(text)[1:-1]
            docs.append(Doc(f"neg:{kind}#{i}", carrier, (before + text + after).encode()))
    return docs


def build(seed: int = 7, per_detector: int = 40, negative_copies: int = 10) -> list[Doc]:
    r = random.Random(seed)
    docs = positives(r, per_detector) + negatives(r, negative_copies)
    r.shuffle(docs)
    return docs


# ------------------------------------------------------------------------------ scoring

@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score(docs: list[Doc], scan: Callable[[bytes], list[tuple[str, int, int]]]) -> dict[str, Score]:
    """Scores per detector id, plus "class:secret", "class:pii" and "overall". A finding is a
    true positive when it has the label's detector and overlaps the label's span."""
    scores: dict[str, Score] = {}

    def bump(key: str, what: str) -> None:
        for k in (key, "class:" + key.split(".")[0], "overall"):
            s = scores.setdefault(k, Score())
            setattr(s, what, getattr(s, what) + 1)

    for doc in docs:
        found = scan(doc.text)
        matched: set[int] = set()
        for det, s, e in doc.labels:
            hit = next((i for i, (d, fs, fe) in enumerate(found)
                        if i not in matched and d == det and fs < e and s < fe), None)
            if hit is None:
                bump(det, "fn")
            else:
                matched.add(hit)
                bump(det, "tp")
        for i, (d, _, _) in enumerate(found):
            if i not in matched:
                bump(d, "fp")
    return scores
