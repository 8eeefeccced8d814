#!/usr/bin/env python3
"""Independent verifier for a running pipetrail: standard library only.

Fetches the verifier key and the latest signed checkpoint, checks the Ed25519 signature
(C2SP signed-note), then for each event checks that its leaf hash is SHA-256(0x00 ||
RFC 8785 bytes of the event) and that its inclusion proof (RFC 9162) leads to the signed
root. With --previous, also checks that the log only grew since an older checkpoint.

Nothing here is shared with the Rust implementation: Ed25519 (RFC 8032), the Merkle
proofs and JSON canonicalization are written from their specifications.

Usage:
  verify_proof.py --url http://127.0.0.1:3000 --token TOKEN [--limit 100] [--previous old-checkpoint.txt]
Exit: 0 verified, 1 a check failed, 2 could not fetch or parse.
"""
import argparse
import base64
import hashlib
import json
import sys
import urllib.request

# ---------------------------------------------------------------- Ed25519 (RFC 8032 §5.1)
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    A = (y1 - x1) * (y2 - x2) % P
    B = (y1 + x1) * (y2 + x2) % P
    C = 2 * t1 * t2 * D % P
    Dd = 2 * z1 * z2 % P
    E, F, G, H = B - A, Dd - C, Dd + C, B + A
    return (E * F % P, G * H % P, F * G % P, E * H % P)


def _mul(s, pt):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _equal(a, b):
    x1, y1, z1, _ = a
    x2, y2, z2, _ = b
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def _decompress(s):
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


_GY = 4 * pow(5, P - 2, P) % P
_G = (_recover_x(_GY, 0), _GY, 1, _recover_x(_GY, 0) * _GY % P)


def ed25519_verify(public, msg, sig):
    if len(public) != 32 or len(sig) != 64:
        return False
    A = _decompress(public)
    R = _decompress(sig[:32])
    s = int.from_bytes(sig[32:], "little")
    if A is None or R is None or s >= L:
        return False
    h = int.from_bytes(hashlib.sha512(sig[:32] + public + msg).digest(), "little") % L
    return _equal(_mul(s, _G), _add(R, _mul(h, A)))


# ---------------------------------------------------------------- signed notes
class CheckFailed(Exception):
    """A signature, hash or proof did not verify (exit 1), as opposed to bad input (exit 2)."""


def parse_vkey(text):
    name, keyhash, b64 = text.strip().split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 verifier key")
    kid = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if kid.hex() != keyhash:
        raise CheckFailed("verifier key hash does not match")
    return name, kid, raw[1:]


def open_note(note, vkey):
    name, kid, public = vkey
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    ok = False
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise ValueError("malformed signature line")
        sname, b64 = line[2:].split(" ", 1)
        raw = base64.b64decode(b64, validate=True)
        if sname == name and raw[:4] == kid:
            if not ed25519_verify(public, text.encode(), raw[4:]):
                raise CheckFailed("checkpoint signature does not verify")
            ok = True
    if not ok:
        raise CheckFailed("checkpoint is not signed by the key")
    origin, size, root = text.split("\n")[:3]
    return origin, int(size), base64.b64decode(root, validate=True)


# ---------------------------------------------------------------- RFC 8785 JSON
def _jcs_number(n):
    if isinstance(n, bool):
        raise TypeError
    if isinstance(n, int):
        return str(n)
    if n == 0:
        return "0"
    r = repr(n)  # shortest round-trip form, like ECMAScript
    if "e" in r or "E" in r:
        mant, exp = r.lower().split("e")
        e = int(exp)
        if -7 < e < 21:
            return format(n, "f").rstrip("0").rstrip(".") if "." in format(n, "f") else format(n, "f")
        if mant.endswith(".0"):
            mant = mant[:-2]
        return f"{mant}e{'+' if e > 0 else '-'}{abs(e)}"
    if r.endswith(".0"):
        r = r[:-2]
    return r


def jcs(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return _jcs_number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(v[k]) for k in keys) + "}"
    raise TypeError(type(v))


# ---------------------------------------------------------------- RFC 9162 proofs
def node(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


def verify_inclusion(index, size, leaf, proof, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(m, n, r1, r2, proof):
    if m > n:
        return False
    if m == n:
        return not proof and r1 == r2
    if m == 0:
        return not proof
    if not proof:
        return False
    path = ([r1] if m & (m - 1) == 0 else []) + list(proof)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == r1 and sr == r2


# ---------------------------------------------------------------- main
def fetch(url, token, path):
    req = urllib.request.Request(url.rstrip("/") + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--limit", type=int, default=100, help="events to check (from the start)")
    ap.add_argument("--previous", help="an older signed checkpoint (file) the log must extend")
    a = ap.parse_args()
    try:
        return check(a)
    except CheckFailed as e:
        print(f"FAIL: {e}")
        return 1
    except (OSError, ValueError, KeyError) as e:
        print(f"ERROR: {e}")
        return 2


def check(a):
    vkey = parse_vkey(fetch(a.url, a.token, "/api/v1/key"))
    origin, size, root = open_note(fetch(a.url, a.token, "/api/v1/checkpoint"), vkey)
    if origin != vkey[0]:
        raise CheckFailed("checkpoint origin differs from the key name")
    events = json.loads(fetch(a.url, a.token, f"/api/v1/events?limit={min(a.limit, 1000)}"))["events"]
    checked = 0
    for ev in events:
        seq = ev["seq"]
        if seq >= size:
            break
        claimed = base64.b64decode(ev.pop("leaf_hash"))
        leaf = hashlib.sha256(b"\x00" + jcs(ev).encode()).digest()
        if leaf != claimed:
            raise CheckFailed(f"event {seq}: leaf hash does not match its canonical bytes")
        proof = json.loads(fetch(a.url, a.token, f"/api/v1/proof/inclusion?seq={seq}&size={size}"))
        if not verify_inclusion(seq, size, leaf, [base64.b64decode(h) for h in proof["proof"]], root):
            raise CheckFailed(f"event {seq}: inclusion proof does not lead to the signed root")
        checked += 1
    if a.previous:
        with open(a.previous) as f:
            _, old_size, old_root = open_note(f.read(), vkey)
        c = json.loads(fetch(a.url, a.token, f"/api/v1/proof/consistency?from={old_size}&to={size}"))
        if not verify_consistency(old_size, size, old_root, root, [base64.b64decode(h) for h in c["proof"]]):
            raise CheckFailed(f"the log at size {size} does not extend the previous checkpoint at size {old_size}")
    print(f"OK: checkpoint {origin} size {size} signed by {vkey[0]}; {checked} event(s) hash to their leaves and are included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
