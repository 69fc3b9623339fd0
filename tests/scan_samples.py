"""Test data for the scanner, assembled at run time.

No string in the repository looks like a live secret: every key is built from pieces and a
seeded random body, so secret scanners (ours included) find nothing in the source, and the
tests are reproducible. Helpers return offsets, never print values.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"
B64 = ALNUM + "+/"


@dataclass(frozen=True)
class Sample:
    """`text` contains exactly one finding of `detector` at text[start:end]."""

    name: str
    detector: str
    text: bytes
    start: int
    end: int

    @property
    def value(self) -> bytes:
        return self.text[self.start:self.end]


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def b64url_json(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def make_jwt(rng: random.Random, payload_claims: int = 2, header: dict | None = None) -> str:
    header = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    payload = {f"claim{i}": rand(rng, ALNUM, 12) for i in range(payload_claims)}
    return ".".join([b64url_json(header), b64url_json(payload), rand(rng, URLSAFE, 43)])


def pem(rng: random.Random, kind: str, lines: int) -> tuple[str, int]:
    """A PEM-shaped private key; returns (text, length of header+body = the finding)."""
    head = "-----" + "BEGIN " + (kind + " " if kind else "") + "PRIVATE " + "KEY-----\n"
    body = "".join(rand(rng, B64, 64) + "\n" for _ in range(lines))
    tail = "-----END " + (kind + " " if kind else "") + "PRIVATE KEY-----\n"
    return head + body + tail, len(head) + len(body)


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    """A digit string of `length` starting with `prefix` whose Luhn digit is right."""
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        candidate = body + check
        total = 0
        for i, ch in enumerate(reversed(candidate)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def sample(name: str, detector: str, before: str, value: str, after: str) -> Sample:
    text = (before + value + after).encode()
    return Sample(name, detector, text, len(before.encode()), len((before + value).encode()))


def true_positives(seed: int = 1234) -> list[Sample]:
    """One or more positive samples for every built-in detector."""
    r = random.Random(seed)
    key_pem, key_len = pem(r, "RSA", 20)
    ec_pem, ec_len = pem(r, "EC", 3)
    ossh_pem, ossh_len = pem(r, "OPENSSH", 6)
    enc_pem, enc_len = pem(r, "ENCRYPTED", 4)
    plain_pem, plain_len = pem(r, "", 4)
    samples = [
        sample("aws-id", "secret.aws_access_key_id", "id=", "AK" + "IA" + rand(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16), "\n"),
        sample("aws-id-asia", "secret.aws_access_key_id", '"', "AS" + "IA" + rand(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16), '"'),
        sample("aws-secret-env", "secret.aws_secret_access_key", "AWS_SECRET_ACCESS_KEY=", rand(r, B64, 39) + "Q", "\n"),
        sample("aws-secret-json", "secret.aws_secret_access_key", '{"SecretAccessKey": "', "a1Z" + rand(r, B64, 37), '"}'),
        sample("github-ghp", "secret.github_token", "token ", "gh" + "p_" + rand(r, ALNUM, 36), " x"),
        sample("github-gho", "secret.github_token", "", "gh" + "o_" + rand(r, ALNUM, 36), ""),
        sample("github-ghs", "secret.github_token", "(", "gh" + "s_" + rand(r, ALNUM, 36), ")"),
        sample("github-ghu", "secret.github_token", "'", "gh" + "u_" + rand(r, ALNUM, 36), "'"),
        sample("github-ghr", "secret.github_token", " ", "gh" + "r_" + rand(r, ALNUM, 36), ";"),
        sample("github-pat", "secret.github_token", "auth: ", "github" + "_pat_" + rand(r, ALNUM, 22) + "_" + rand(r, ALNUM, 59), "\r\n"),
        sample("openai-proj", "secret.openai_api_key", "Authorization: Bearer ", "sk-" + "proj-" + rand(r, URLSAFE, 120), "\r\n"),
        sample("openai-legacy", "secret.openai_api_key", "OPENAI_API_KEY=", "sk-" + rand(r, ALNUM, 48), "\n"),
        sample("openai-svcacct", "secret.openai_api_key", "k: ", "sk-" + "svcacct-" + rand(r, URLSAFE, 60), " "),
        sample("anthropic", "secret.anthropic_api_key", "x-api-key: ", "sk-" + "ant-api03-" + rand(r, URLSAFE, 93) + "AA", "\r\n"),
        sample("slack-bot", "secret.slack_token", "SLACK=", "xo" + "xb-" + "123456789012-" + "1234567890123-" + rand(r, ALNUM, 24), "\n"),
        sample("slack-user", "secret.slack_token", "t ", "xo" + "xp-" + "12345678901-" + rand(r, ALNUM, 32), "."),
        sample("google", "secret.google_api_key", "?key=", "AI" + "za" + rand(r, URLSAFE, 35), "&q=1"),
        sample("stripe-live", "secret.stripe_key", "", "sk" + "_live_" + rand(r, ALNUM, 24), " "),
        sample("stripe-restricted", "secret.stripe_key", "key ", "rk" + "_live_" + rand(r, ALNUM, 30), ""),
        sample("stripe-test", "secret.stripe_key", "=", "sk" + "_test_" + rand(r, ALNUM, 99), "\n"),
        sample("jwt", "secret.jwt", "Authorization: Bearer ", make_jwt(r), "\r\n"),
        sample("jwt-unsigned", "secret.jwt", "t=", make_jwt(r, header={"alg": "none"}).rsplit(".", 1)[0] + ".", " "),
        sample("jwt-large", "secret.jwt", "id_token=", make_jwt(r, payload_claims=80), "&"),
        Sample("pem-rsa", "secret.private_key", ("key:\n" + key_pem).encode(), 5, 5 + key_len),
        Sample("pem-ec", "secret.private_key", ec_pem.encode(), 0, ec_len),
        Sample("pem-openssh", "secret.private_key", ("x" + ossh_pem).encode(), 1, 1 + ossh_len),
        Sample("pem-encrypted", "secret.private_key", enc_pem.encode(), 0, enc_len),
        Sample("pem-pkcs8", "secret.private_key", plain_pem.encode(), 0, plain_len),
        sample("url-postgres", "secret.url_password", "DATABASE_URL=", "postgres://app:" + rand(r, ALNUM, 14) + "@db.internal.example", ":5432/x\n"),
        sample("url-https", "secret.url_password", "see ", "https://deploy:" + rand(r, ALNUM + "!~", 10) + "@registry.example.com", "/v2/ ok"),
        sample("email", "pii.email", "contact ", "jane.doe+tag@mail.example.co.uk", ". Thanks"),
        sample("email-angle", "pii.email", "To: <", "a_b@example.org", ">"),
        sample("card-visa", "pii.payment_card", "card ", "4111111111111111", " exp"),
        sample("card-spaced", "pii.payment_card", "pan: ", "4111 1111 1111 1111", "\n"),
        sample("card-mc-dashed", "pii.payment_card", "", "5500-0000-0000-0004", ""),
        sample("card-amex", "pii.payment_card", "amex ", "378282246310005", "."),
        sample("card-random-visa", "pii.payment_card", "n=", luhn_complete("4", 16, r), ";"),
        sample("card-after-number", "pii.payment_card", "order 12 ", "4111 1111 1111 1111", " ok"),
        sample("ssn", "pii.us_ssn", "SSN: ", "123-45-6780", "."),
        sample("ssn-spaced", "pii.us_ssn", "ssn ", "536 22 1234", " "),
        sample("phone-us-intl", "pii.phone", "call ", "+1 415 555 2671", " now"),
        sample("phone-gb-intl", "pii.phone", "tel:", "+44 20 7946 0958", ""),
        sample("phone-e164", "pii.phone", "to=", "+14155552671", "&"),
        sample("phone-us-national", "pii.phone", "office ", "(415) 555-2671", "."),
        sample("phone-us-dashed", "pii.phone", "m: ", "415-555-2671", "\n"),
        sample("iban-de", "pii.iban", "IBAN ", "DE89 3704 0044 0532 0130 00", " BIC X"),
        sample("iban-gb", "pii.iban", "to ", "GB82WEST12345698765432", "."),
        sample("iban-fr", "pii.iban", "", "FR1420041010050500013M02606", ""),
        sample("gcp-sa", "secret.gcp_service_account", '{"type": "service_account", "project_id": "p", "private' + '_key_id": "', rand(r, "0123456789abcdef", 40), '", "private_key": "x"}'),
        sample("azure-storage", "secret.azure_storage_key", "DefaultEndpointsProtocol=https;AccountName=acct;Account" + "Key=", rand(r, B64, 86) + "==", ";EndpointSuffix=core.windows.net"),
        sample("azure-sas", "secret.azure_storage_key", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccess" + "Key=", rand(r, B64, 43) + "=", "\n"),
        sample("gitlab-pat", "secret.gitlab_token", "PRIVATE-TOKEN: ", "gl" + "pat-" + rand(r, URLSAFE, 20), "\r\n"),
        sample("gitlab-runner", "secret.gitlab_token", "token = \"", "gl" + "rt-" + rand(r, URLSAFE, 20), "\""),
        sample("bitbucket", "secret.bitbucket_app_password", "BITBUCKET_APP_PASSWORD=", "AT" + "BB" + rand(r, ALNUM, 32), "\n"),
        sample("huggingface", "secret.huggingface_token", "HF_TOKEN=", "hf" + "_" + rand(r, string.ascii_letters, 34), "\n"),
        sample("groq", "secret.groq_api_key", "Authorization: Bearer ", "gs" + "k_" + rand(r, ALNUM, 52), "\r\n"),
        sample("cohere", "secret.cohere_api_key", "COHERE_API_KEY=", rand(r, ALNUM, 39) + "7", "\n"),
        sample("mistral", "secret.mistral_api_key", '{"mistral_api_key": "', rand(r, ALNUM, 31) + "Q", '"}'),
        sample("slack-webhook", "secret.slack_webhook", "POST https://", "hooks" + ".slack.com/services/T" + rand(r, string.ascii_uppercase + string.digits, 8) + "/B" + rand(r, string.ascii_uppercase + string.digits, 10) + "/" + rand(r, ALNUM, 24), " HTTP/1.1"),
        sample("twilio", "secret.twilio_api_key", "TWILIO_API_KEY=", "S" + "K" + rand(r, "0123456789abcdef", 32), "\n"),
        sample("sendgrid", "secret.sendgrid_api_key", "apikey: ", "S" + "G." + rand(r, URLSAFE, 22) + "." + rand(r, URLSAFE, 43), "\n"),
        sample("itin", "pii.us_itin", "ITIN: ", "912-78-1234", "."),
        sample("itin-spaced", "pii.us_itin", "taxpayer id ", "987 91 2345", " "),
        sample("ipv4", "pii.ipv4_address", "client=", "203.0.113.42", " port=443"),
        sample("ipv4-private", "pii.ipv4_address", "from ", "10.1.2.3", "\n"),
        sample("ipv6", "pii.ipv6_address", "addr ", "2001:db8:85a3::8a2e:370:7334", " ok"),
        sample("ipv6-full", "pii.ipv6_address", "[", "2001:0db8:0000:0000:0000:ff00:0042:8329", "]:443"),
        sample("dob-iso", "pii.date_of_birth", "DOB: ", "1984-07-23", "\n"),
        sample("dob-us", "pii.date_of_birth", "Date of birth ", "07/23/1984", "."),
        sample("dob-name", "pii.date_of_birth", "she was born on ", "March 3, 1990", " in Ohio"),
    ]
    return samples


def false_positives(seed: int = 99) -> list[tuple[str, bytes]]:
    """(name, text) pairs in which the built-in pack must find NOTHING."""
    r = random.Random(seed)
    hexsha = rand(r, "0123456789abcdef", 40)
    items = [
        ("aws-id-short", "id=AK" + "IA" + rand(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 15) + " "),
        ("aws-id-in-longer-token", "AK" + "IA" + rand(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", 16) + "XYZ"),
        ("aws-id-lowercase", "ak" + "ia" + rand(r, "abcdefghijklmnopqrstuvwxyz", 16)),
        ("aws-secret-no-keyword", "value = " + rand(r, B64, 40) + "\n"),
        ("aws-secret-git-sha", "aws commit " + hexsha + "\n"),
        ("aws-secret-low-entropy", "aws_secret=" + "Ab1" * 13 + "A\n"),
        ("aws-secret-41-chars", "aws_secret=" + rand(r, B64, 41) + "\n"),
        ("github-wrong-kind", "gh" + "x_" + rand(r, ALNUM, 36)),
        ("github-too-short", "gh" + "p_" + rand(r, ALNUM, 35) + " "),
        ("github-too-long", "gh" + "p_" + rand(r, ALNUM, 90) + " "),
        ("openai-short", "sk-" + rand(r, ALNUM, 20)),
        ("openai-low-entropy", "sk-" + "a" * 48),
        ("openai-css-like", "class=sk-button sk-large"),
        ("anthropic-short", "sk-" + "ant-" + rand(r, ALNUM, 10)),
        ("anthropic-placeholder", "sk-" + "ant-" + "x" * 40),
        ("slack-wrong-letter", "xo" + "xz-123456789-" + rand(r, ALNUM, 20)),
        ("slack-no-number", "xo" + "xb-" + rand(r, "abcdef", 20)),
        ("google-short", "AI" + "za" + rand(r, ALNUM, 34) + " "),
        ("google-long", "AI" + "za" + rand(r, ALNUM, 36)),
        ("stripe-publishable", "pk" + "_live_" + rand(r, ALNUM, 24)),
        ("stripe-short", "sk" + "_live_" + rand(r, ALNUM, 10)),
        ("jwt-no-alg", b64url_json({"typ": "JWT"}) + "." + b64url_json({"a": 1}) + "." + rand(r, URLSAFE, 20)),
        ("jwt-garbage", "eyJ" + rand(r, URLSAFE, 30) + ".eyJ" + rand(r, URLSAFE, 30) + "." + rand(r, URLSAFE, 20)),
        ("jwt-two-parts", b64url_json({"alg": "HS256"}) + "." + b64url_json({"a": 1})),
        ("pem-public", "-----BEGIN " + "PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"),
        ("pem-cert", "-----BEGIN " + "CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"),
        ("url-port-only", "https://example.com:8080/path"),
        ("url-no-password", "ftp://anonymous@files/x"),
        ("url-placeholder", "postgres://user:" + "password" + "@localhost/db"),
        ("url-template", "postgres://user:${DB_PASSWORD}@db/x"),
        ("url-stars", "https://user:********@host.example"),
        ("email-retina-asset", "src=icon@2x.png"),
        ("email-no-tld", "user@localhost"),
        ("email-no-local", "x @example.com"),
        ("card-luhn-fails", "card 4111111111111112"),
        ("card-unknown-issuer", "n " + luhn_complete("9", 16, r)),
        ("card-one-digit", "0000 0000 0000 0000"),
        ("card-17-digit-visa", "id " + luhn_complete("4", 17, r)),
        ("card-in-long-number", "ts 98765432101234567890123"),
        # A float's fraction: embedding vectors are full of 16-17 digit fractions.
        ("card-float-fraction", '{"embedding": [0.' + luhn_complete("4", 16, r) + ', -0.5]}'),
        ("ssn-area-000", "SSN 000-12-3456"),
        ("ssn-area-666", "SSN 666-12-3456"),
        ("ssn-area-900", "SSN 900-12-3456"),
        ("ssn-area-999", "SSN 999-12-3456"),
        ("ssn-group-00", "SSN 123-00-4567"),
        ("ssn-serial-0000", "SSN 123-45-0000"),
        ("ssn-advert", "SSN 078-05-1120"),
        ("ssn-in-longer", "id 1123-45-67890"),
        ("phone-invalid-area", "+1 123 456 7890"),
        ("phone-too-short", "+12345"),
        ("phone-version", "v1.2.3.4 build 20240101"),
        ("phone-national-invalid", "(123) 456-7890"),
        ("iban-bad-checksum", "IBAN DE89 3704 0044 0532 0130 01"),
        ("iban-wrong-length", "IBAN DE89 3704 0044 0532 0130"),
        ("iban-unknown-country", "ZZ12 3456 7890 1234 56"),
        ("prose", "The quick brown fox jumps over the lazy dog. Version 1.2.3, 42 items, 2024-05-01."),
        ("code", "def f(x):\n    return {'a': [1, 2, 3], \"b\": x * 1000003}  # ok\n"),
        ("aws-id-example", "aws_access_key_id = AK" + "IAIOSFODNN7EXAMPLE\n"),
        ("aws-secret-example", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY\n"),
        ("gcp-no-id", '{"type": "service_account", "private_key_id": "' + "z" * 40 + '"}'),
        ("azure-short-key", "AccountName=a;Account" + "Key=" + rand(r, B64, 40) + "==;"),
        ("gitlab-short", "gl" + "pat-" + rand(r, ALNUM, 10) + " "),
        ("gitlab-placeholder", "gl" + "pat-" + "x" * 20 + " "),
        ("bitbucket-short", "AT" + "BB" + rand(r, ALNUM, 20) + " "),
        ("huggingface-digits", "hf" + "_" + rand(r, ALNUM, 30) + "1234 "),
        ("groq-short", "gs" + "k_" + rand(r, ALNUM, 40) + " "),
        ("cohere-no-keyword", "value=" + rand(r, ALNUM, 40) + "\n"),
        ("cohere-low-entropy", "cohere_key=" + "ab" * 20 + "\n"),
        ("mistral-uuid", "mistral run " + "0f8fad5b-d9cb-469f-a165-70867728950e" + "\n"),
        ("slack-webhook-docs", "https://hooks" + ".slack.com/services/XXXX/YYYY/ZZZZ"),
        ("twilio-account-sid", "AC" + rand(r, "0123456789abcdef", 32)),
        ("twilio-upper-hex", "S" + "K" + rand(r, "0123456789ABCDEF", 32)),
        ("sendgrid-short", "S" + "G." + rand(r, URLSAFE, 10) + "." + rand(r, URLSAFE, 10)),
        ("itin-bad-group", "ITIN 912-93-1234"),
        ("itin-serial-0000", "ITIN 912-78-0000"),
        ("ipv4-version", "version 10.2.3.4 released"),
        ("ipv4-octet-too-big", "at 256.1.1.1 now"),
        ("ipv4-five-parts", "oid 1.3.6.1.4.1 x"),
        ("ipv6-cpp-scope", "std::vector<int> a::b Foo::bar"),
        ("ipv6-time", "12:30:45 and 2024-01-01T10:20:30Z"),
        ("ipv6-mac", "mac 00:1a:2b:3c:4d:5e"),
        ("dob-no-keyword", "released 1984-07-23 to all users"),
        ("dob-future", "DOB: 2199-01-01"),
        ("dob-invalid-date", "date of birth 1984-02-31"),
        ("dob-log-line", "2024-05-01T10:00:00Z born-again job started"),
    ]
    return [(name, text.encode()) for name, text in items]


def streamed(engine, data: bytes, cuts: list[int]) -> list[tuple[str, int, int]]:
    """Feed `data` cut at `cuts`, checking that nothing is reported from before the
    safe_offset in force; returns the sorted (detector, start, end) findings."""
    stream = engine.open_stream()
    out, pos = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        if cut <= pos:
            continue
        before = stream.safe_offset
        for d in stream.feed(data[pos:cut]):
            assert d.start >= before, (d.detector, d.start, before)
            out.append((d.detector, d.start, d.end))
        pos = cut
    before = stream.safe_offset
    for d in stream.close():
        assert d.start >= before, (d.detector, d.start, before)
        out.append((d.detector, d.start, d.end))
    assert stream.safe_offset == len(data)
    return sorted(out)
