#!/usr/bin/env python3
"""An independent decoder of the interconnect wire format, written from WIRE.md alone.

It reads the frame layout, CRC, payload encoding and the table of kinds from the
document itself, then checks every example and every transcript vector in it:

- each example's hex decodes to the fields printed under it and encodes back to the same
  bytes;
- each handshake step and sealed frame of the transcript decodes and encodes back, and
  every value the document derives with SHA-256 or from the frame layout is recomputed:
  key fingerprints, the prologue, step 2's commitment, step 4's nonce, the pairing code,
  associated data, segment counts, epochs, nonces and frame lengths.

- the file example's chunks cover its offer and its digest is their BLAKE3, computed
  by a BLAKE3 written here from its specification (checked against published vectors);
- each state update of the state example is a `Data` of exchange `State` whose payload,
  read with the layout the document gives, is the update printed under it.

What it cannot check with the standard library alone: X25519, AES-GCM and
ChaCha20-Poly1305 (the handshake messages, keys, REKEY and the ciphertexts themselves).

Given a recorded session (spec/session.txt) as a second argument, it also follows it
frame by frame against "Sessions, step by step": Hellos first, every Open answered once,
sequence numbers from 1 (or, after a resumption, from what the peer reported),
acknowledgements only of what arrived, a refused channel silent, file chunks from the
accepted offset without a gap across the link drop, the digest the BLAKE3 of the file.

Usage: python3 spec/wire.py [path/to/WIRE.md [path/to/session.txt]]; exits non-zero on
any mismatch.
"""

import hashlib
import json
import math
import re
import sys

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


# ---- BLAKE3 (hash mode, 32-byte output), from its specification ----

B3_IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
         0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
B3_PERMUTATION = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
CHUNK_START, CHUNK_END, PARENT, ROOT = 1, 2, 4, 8
B3_CHUNK = 1024


def b3_compress(cv, block, counter, block_len, flags):
    m = list(int.from_bytes(block[i:i + 4], "little") for i in range(0, 64, 4))
    v = list(cv) + B3_IV[:4] + [counter & 0xFFFFFFFF, counter >> 32, block_len, flags]

    def g(a, b, c, d, x, y):
        v[a] = (v[a] + v[b] + x) & 0xFFFFFFFF
        v[d] = ((v[d] ^ v[a]) >> 16 | (v[d] ^ v[a]) << 16) & 0xFFFFFFFF
        v[c] = (v[c] + v[d]) & 0xFFFFFFFF
        v[b] = ((v[b] ^ v[c]) >> 12 | (v[b] ^ v[c]) << 20) & 0xFFFFFFFF
        v[a] = (v[a] + v[b] + y) & 0xFFFFFFFF
        v[d] = ((v[d] ^ v[a]) >> 8 | (v[d] ^ v[a]) << 24) & 0xFFFFFFFF
        v[c] = (v[c] + v[d]) & 0xFFFFFFFF
        v[b] = ((v[b] ^ v[c]) >> 7 | (v[b] ^ v[c]) << 25) & 0xFFFFFFFF

    for r in range(7):
        g(0, 4, 8, 12, m[0], m[1]); g(1, 5, 9, 13, m[2], m[3])
        g(2, 6, 10, 14, m[4], m[5]); g(3, 7, 11, 15, m[6], m[7])
        g(0, 5, 10, 15, m[8], m[9]); g(1, 6, 11, 12, m[10], m[11])
        g(2, 7, 8, 13, m[12], m[13]); g(3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[i] for i in B3_PERMUTATION]
    return [v[i] ^ v[i + 8] for i in range(8)]


def b3_node(data, chunk_index, root):
    """The chaining value of a subtree (or, with `root`, the hash words)."""
    if len(data) <= B3_CHUNK:
        cv, blocks = B3_IV, [data[i:i + 64] for i in range(0, len(data), 64)] or [b""]
        for i, block in enumerate(blocks):
            flags = (CHUNK_START if i == 0 else 0) | (CHUNK_END if i == len(blocks) - 1 else 0)
            if root and i == len(blocks) - 1:
                flags |= ROOT
            cv = b3_compress(cv, block.ljust(64, b"\0"), chunk_index, len(block), flags)
        return cv
    chunks = -(-len(data) // B3_CHUNK)
    left_chunks = 1 << ((chunks - 1).bit_length() - 1)
    left = b3_node(data[:left_chunks * B3_CHUNK], chunk_index, False)
    right = b3_node(data[left_chunks * B3_CHUNK:], chunk_index + left_chunks, False)
    block = b"".join(w.to_bytes(4, "little") for w in left + right)
    return b3_compress(B3_IV, block, 0, 64, PARENT | (ROOT if root else 0))


def blake3(data):
    return b"".join(w.to_bytes(4, "little") for w in b3_node(bytes(data), 0, True))


# ---- the frame layout (section "Wire format") ----

def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def frame(kind, payload):
    head = bytes([1, kind, 0]) + len(payload).to_bytes(3, "little")
    body = head + payload
    return body + crc32c(body).to_bytes(4, "little")


SEALED, NO_CRC, TAGS_LAST = 0x41, 0x01, 0x02


def unframe(data):
    check(data[0] == 1, "frame version 1")
    n = int.from_bytes(data[3:6], "little")
    if data[2] != 0:
        check(data[1] == SEALED, "only a Sealed frame carries flags")
        check(data[2] & ~(NO_CRC | TAGS_LAST) == 0, "no other flags")
    if data[2] & NO_CRC:
        check(len(data) == n + 6, "frame length without a CRC = payload + 6")
        return data[1], data[6:]
    check(len(data) == n + 10, "frame length = payload + 10")
    crc = int.from_bytes(data[-4:], "little")
    check(crc == crc32c(data[:-4]), "CRC-32C")
    return data[1], data[6:-4]


# ---- payload encoding (section "Payload encoding") ----

class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def byte(self):
        b = self.data[self.at]
        self.at += 1
        return b

    def varint(self):
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    def take(self, n):
        out = self.data[self.at:self.at + n]
        check(len(out) == n, "enough bytes")
        self.at += n
        return out

    def rest(self):
        out = self.data[self.at:]
        self.at = len(self.data)
        return out


def varint(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Types:
    """Decoders and encoders of the types the document names, enums read from its text."""

    def __init__(self, doc):
        self.enums = {}
        for name, variants in re.findall(r"`(\w+)` ((?:\w+(?:\(u32\))?=\d+(?:, )?)+)", doc):
            self.enums[name] = {
                int(i): (v, bool(arg)) for v, arg, i in re.findall(r"(\w+)(\(u32\))?=(\d+)", variants)
            }
        for name in ("Role", "ContentType", "Exchange"):
            check(name in self.enums, f"the document gives the variants of {name}")

    def decode(self, ty, r):
        ty = ty.strip()
        if ty == "u8":
            return r.byte()
        if ty in ("u16", "u32", "u64"):
            return r.varint()
        if ty == "bool":
            b = r.byte()
            check(b in (0, 1), "bool is 0 or 1")
            return b == 1
        if ty == "String":
            return r.take(r.varint()).decode("utf-8")
        m = re.fullmatch(r"\[u8; ?(\d+)\]", ty)
        if m:
            return list(r.take(int(m.group(1))))
        m = re.fullmatch(r"Option<(.+)>", ty)
        if m:
            tag = r.byte()
            check(tag in (0, 1), "option tag is 0 or 1")
            return self.decode(m.group(1), r) if tag else None
        enum = {"role": "Role", "Role": "Role", "content_type": "ContentType",
                "exchange": "Exchange"}.get(ty)
        if enum:
            variant, arg = self.enums[enum][r.varint()]
            return {variant: r.varint()} if arg else variant
        raise ValueError(f"type {ty} is not in the document")

    def encode(self, ty, value):
        ty = ty.strip()
        if ty == "u8":
            return bytes([value])
        if ty in ("u16", "u32", "u64"):
            return varint(value)
        if ty == "bool":
            return bytes([1 if value else 0])
        if ty == "String":
            raw = value.encode("utf-8")
            return varint(len(raw)) + raw
        if re.fullmatch(r"\[u8; ?(\d+)\]", ty):
            return bytes(value)
        m = re.fullmatch(r"Option<(.+)>", ty)
        if m:
            return b"\x00" if value is None else b"\x01" + self.encode(m.group(1), value)
        enum = {"role": "Role", "Role": "Role", "content_type": "ContentType",
                "exchange": "Exchange"}[ty]
        for index, (variant, arg) in self.enums[enum].items():
            if arg and isinstance(value, dict) and variant in value:
                return varint(index) + varint(value[variant])
            if not arg and value == variant:
                return varint(index)
        raise ValueError(f"{value} is not a {enum}")


def split_top(text):
    """Splits at commas outside <> and []."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "<[" and 1 or 0
        depth -= ch in ">]" and 1 or 0
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def kinds_table(doc):
    """kind byte -> (name, [(field, type)], bulk field name or None), from "## Kinds"."""
    kinds = {}
    for code, name, fields in re.findall(r"^\| `0x([0-9a-f]{2})` \| (\w+) \| (.+) \|$", doc, re.M):
        bulk = None
        if "; raw" in fields:
            head, _ = fields.split("; raw", 1)
            fields = head.replace("sub-header", "")
            bulk = True
        parts = []
        for item in split_top(fields.strip(" `")):
            field, _, ty = item.partition(":")
            parts.append((field.strip(), ty.strip() or field.strip()))
        kinds[int(code, 16)] = (name, parts, bulk)
    check(len(kinds) == 22, f"22 kinds in the table (found {len(kinds)})")
    return kinds


# Which bytes a bulk kind carries raw, and their name in the examples.
BULK = {"Data": "payload", "FileChunk": "data", "FileOfferMeta": "meta", "Handshake": "message", "Sealed": "ciphertext"}


def decode(kinds, types, data):
    kind, payload = unframe(data)
    name, fields, bulk = kinds[kind]
    r = Reader(payload)
    out = {}
    for field, ty in fields:
        value = types.decode(ty, r)
        if ty.startswith("Option<[u8") and value is not None:
            value = bytes(value).hex()
        out[field] = value
    if bulk:
        out[BULK[name]] = r.rest().hex()
    check(r.at == len(payload), f"{name}: no bytes left over")
    return name, out


def encode(kinds, types, name, values):
    kind = next(k for k, (n, _, _) in kinds.items() if n == name)
    _, fields, bulk = kinds[kind]
    payload = b""
    for field, ty in fields:
        value = values[field]
        if ty.startswith("Option<[u8") and value is not None:
            value = list(bytes.fromhex(value))
        payload += types.encode(ty, value)
    if bulk:
        payload += bytes.fromhex(values[BULK[name]])
    return frame(kind, payload)


# ---- the checks ----

def section(doc, start, end):
    i = doc.index(start)
    return doc[i:doc.index(end, i)]


def hex_blocks(text):
    return ["".join(b.split()) for b in re.findall(r"```text\n([0-9a-f\n]+)```", text)]


def check_examples(doc, kinds, types):
    block = section(doc, "<!-- examples:", "<!-- end of examples -->")
    lines = [l for l in block.splitlines() if l and not l.startswith(("<", "```"))]
    check(len(lines) == 44, "22 examples with their fields")
    for head, body in zip(lines[::2], lines[1::2]):
        name, hex_text = head.split()
        data = bytes.fromhex(hex_text)
        decoded_name, fields = decode(kinds, types, data)
        check(decoded_name == name, f"{name}: its kind byte")
        expected = json.loads(body)
        check(fields == expected, f"{name}: fields {fields} vs {expected}")
        check(encode(kinds, types, name, fields) == data, f"{name}: encodes back byte for byte")
    return len(lines) // 2


def check_file_example(doc, kinds, types):
    """The file example: chunks that cover the offer, and the BLAKE3 of what they carry."""
    block = section(doc, "<!-- file example:", "<!-- end of the file example -->")
    lines = [l for l in block.splitlines() if l and not l.startswith(("<", "```"))]
    frames = [decode(kinds, types, bytes.fromhex(head.split()[1])) for head in lines[::2]]
    for (name, fields), body in zip(frames, lines[1::2]):
        check(fields == json.loads(body), f"file example {name}: the fields printed under it")
    check([name for name, _ in frames][:1] == ["FileOffer"], "the file example opens with an offer")
    offer = frames[0][1]
    data = b""
    for name, fields in frames[1:]:
        check(name == "FileChunk", "the file example's chunks")
        check(fields["offset"] == len(data), "chunks follow each other without a gap")
        data += bytes.fromhex(fields["data"])
        last = len(data) == offer["size"]
        check((fields["digest"] is not None) == last, "only the chunk that ends the file has a digest")
    check(len(data) == offer["size"], "the chunks carry the offered size")
    check(frames[-1][1]["digest"] == blake3(data).hex(), "the digest is the BLAKE3 of the file")
    # The example of each kind: its FileChunk ends the 3-byte file of its FileOffer.
    examples = section(doc, "<!-- examples:", "<!-- end of examples -->")
    chunk = json.loads(examples.split("FileChunk", 1)[1].splitlines()[1])
    check(chunk["digest"] == blake3(bytes.fromhex(chunk["data"])).hex(),
          "the FileChunk example's digest is the BLAKE3 of its data")
    return len(data)


def check_state_example(doc, kinds, types):
    """The state example: Data frames whose exchange is State, their payload read with
    the layout the document gives for a state update; returns how many."""
    layout = re.search(r"the payload is\s+`([^`]+)`, then the value's bytes raw", doc)
    check(layout is not None, "the document gives the layout of a state update")
    fields_of = [(f.strip(), t.strip()) for f, _, t in
                 (item.partition(":") for item in split_top(layout.group(1)))]
    block = section(doc, "<!-- state example:", "<!-- end of the state example -->")
    lines = [l.strip() for l in block.splitlines() if l and not l.startswith(("<", "```"))]
    check(len(lines) >= 3 and len(lines) % 3 == 0, "state example: frame, fields, update")
    origins = set()
    for head, body, update in zip(lines[::3], lines[1::3], lines[2::3]):
        name, fields = decode(kinds, types, bytes.fromhex(head.split()[1]))
        check(name == "Data" and fields["exchange"] == "State", "a state update is a Data of exchange State")
        check(fields == json.loads(body), "state example: the fields printed under it")
        r = Reader(bytes.fromhex(fields["payload"]))
        got = {field: types.decode(ty, r) for field, ty in fields_of}
        got["value"] = r.rest().hex()
        check(not got["removed"] or got["value"] == "", "a removal carries no value")
        check(len(got["key"].encode()) <= 128, "a key holds at most 128 bytes")
        check(got == json.loads(update.split(" ", 1)[1]), f"state example: the update {got}")
        origins.add(got["origin"])
    first = json.loads(lines[2].split(" ", 1)[1])
    check(first["key"] == "" and first["removed"], "the example opens with the origin alone")
    check(len(origins) == 1, "one sender, one origin")
    return len(lines) // 3


def check_durable_example(doc, kinds, types):
    """The durable example: Data frames whose exchange is Durable, their payload read
    with the layout the document gives for a durable message; returns how many."""
    layout = re.search(r"the payload is\s+`([^`]+)`, then the message's\s+bytes raw", doc)
    check(layout is not None, "the document gives the layout of a durable message")
    fields_of = [(f.strip(), t.strip()) for f, _, t in
                 (item.partition(":") for item in split_top(layout.group(1)))]
    block = section(doc, "<!-- durable example:", "<!-- end of the durable example -->")
    lines = [l.strip() for l in block.splitlines() if l and not l.startswith(("<", "```"))]
    check(len(lines) >= 3 and len(lines) % 3 == 0, "durable example: frame, fields, message")
    seen = {}
    for head, body, durable in zip(lines[::3], lines[1::3], lines[2::3]):
        name, fields = decode(kinds, types, bytes.fromhex(head.split()[1]))
        check(name == "Data" and fields["exchange"] == "Durable", "a durable message is a Data of exchange Durable")
        check(fields == json.loads(body), "durable example: the fields printed under it")
        r = Reader(bytes.fromhex(fields["payload"]))
        got = {field: types.decode(ty, r) for field, ty in fields_of}
        got["message"] = r.rest().hex()
        check(got == json.loads(durable.split(" ", 1)[1]), f"durable example: the message {got}")
        key = (got["origin"], got["seq"])
        check(seen.get(key, got["message"]) == got["message"], "a resend carries the same message")
        seen[key] = got["message"]
    return len(lines) // 3


def check_session(path, kinds, types):
    """Follows a recorded session against "Sessions, step by step"; returns (links, frames)."""
    state = {
        "links": 0, "frames": 0, "tokens": None, "resumed": False,
        "hello": set(),          # sides whose Hello came on this link
        "opens": {},             # channel -> the Open
        "answered": set(),       # channels the phone answered on this link
        "refused": set(), "closed": set(),
        "sent": {},              # (side, channel) -> last seq sent
        "got": {},               # (side, channel) -> last seq received (by the other side)
        "acked": {},             # (side, channel) -> last Ack seq sent by side
        "files": {},             # transfer -> {size, data, accepted, done}
    }
    other = {"W": "P", "P": "W"}

    def on_frame(side, name, f):
        st = state
        if name == "Hello":
            check(side not in st["hello"], f"{side}: one Hello per link")
            check(f["role"] == ("Watch" if side == "W" else "Phone"), f"{side}: Hello's role")
            check(f["min_version"] <= 1 <= f["max_version"], f"{side}: speaks version 1")
            st["hello"].add(side)
            return
        check(side in st["hello"], f"{side}: {name} only after its Hello")
        ch = f.get("channel")
        if name == "Open":
            check(side == "W", "only the watch opens")
            st["opens"][ch] = f
            if f["resume"]:
                check(st["resumed"], "resume only with the same tokens")
                check(f["received_seq"] == st["acked"].get(("W", ch), 0),
                      "Open.received_seq: what the watch acknowledged")
        elif name in ("Accept", "Reject"):
            check(side == "P" and ch in st["opens"], f"{name} answers an Open")
            check(ch not in st["answered"], f"one answer per Open (channel {ch})")
            st["answered"].add(ch)
            if name == "Reject":
                check(f["code"] in (1001, 1002, 1007, 4000), "a Reject's code")
                st["refused"].add(ch)
            else:
                want_resume = st["opens"][ch]["resume"]
                check(f["resumed"] == want_resume, "Accept.resumed answers Open.resume")
                if f["resumed"]:
                    check(f["received_seq"] == st["acked"].get(("P", ch), 0),
                          "Accept.received_seq: what the phone acknowledged")
                    # Each side resends from what the other reported.
                    st["sent"][("W", ch)] = f["received_seq"]
                    st["sent"][("P", ch)] = st["opens"][ch]["received_seq"]
                else:
                    for key in [k for k in st["sent"] if k[1] == ch]:
                        del st["sent"][key]
        elif name == "Data":
            check(ch in st["answered"] and ch not in st["refused"], "Data only on an accepted channel")
            check((side, ch) not in st["closed"], "no Data after the sender's Close")
            want = st["sent"].get((side, ch), 0) + 1
            check(f["seq"] == want, f"{side} Data seq {f['seq']}, expected {want}")
            st["sent"][(side, ch)] = f["seq"]
            st["got"][(other[side], ch)] = f["seq"]
        elif name == "Ack":
            last = st["got"].get((side, ch), 0)
            check(f["seq"] <= last, "an Ack names only what arrived")
            check(f["seq"] >= st["acked"].get((side, ch), 0), "Acks never go back")
            st["acked"][(side, ch)] = f["seq"]
        elif name == "Close":
            st["closed"].add((side, ch))
        elif name == "FileOffer":
            t = f["transfer"]
            check(t % 2 == (1 if side == "W" else 0), "a transfer id carries its sender's parity")
            entry = st["files"].setdefault(t, {"size": f["size"], "data": b"", "accepted": None, "done": False})
            check(entry["size"] == f["size"], "an offer again names the same file")
            entry["accepted"] = None
        elif name == "FileAccept":
            entry = st["files"].get(f["transfer"])
            check(entry is not None, "FileAccept answers an offer")
            check(f["offset"] <= max(entry["size"] - 1, 0), "accepted at most size - 1")
            check(f["offset"] <= len(entry["data"]), "accepted at what the receiver holds")
            entry["data"] = entry["data"][:f["offset"]]
            entry["accepted"] = f["offset"]
        elif name == "FileChunk":
            entry = st["files"].get(f["transfer"])
            check(entry is not None and entry["accepted"] is not None, "chunks only after FileAccept")
            check(f["offset"] == len(entry["data"]), "chunks follow the accepted offset without a gap")
            entry["data"] += bytes.fromhex(f["data"])
            end = len(entry["data"]) == entry["size"]
            check((f["digest"] is not None) == end, "the digest rides on the chunk that ends the file")
            if end:
                check(f["digest"] == blake3(entry["data"]).hex(), "the digest is the file's BLAKE3")
        elif name == "FileAck":
            entry = st["files"].get(f["transfer"])
            check(entry is not None and f["offset"] <= len(entry["data"]), "a FileAck names bytes that arrived")
        elif name == "FileComplete":
            entry = st["files"].get(f["transfer"])
            check(entry is not None and len(entry["data"]) == entry["size"], "FileComplete after the whole file")
            entry["done"] = True

    tokens = {}
    for line in open(path, encoding="utf-8").read().splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("-- link"):
            state["links"] += 1
            state["hello"] = set()
            state["answered"] = set()
            continue
        side, hex_text = line.split("> ")
        name, fields = decode(kinds, types, bytes.fromhex(hex_text))
        state["frames"] += 1
        if name == "Hello":
            previous = tokens.get(side)
            tokens[side] = fields["resume_token"]
            if side == "P" and "W" in tokens:
                state["resumed"] = state["links"] > 1 and previous == fields["resume_token"]
        on_frame(side, name, fields)
    check(all(f["done"] for f in state["files"].values()), "every file was stored")
    check(bool(state["refused"]), "the session shows a refusal")
    return state["links"], state["frames"]


def colon(digest):
    return ":".join(f"{b:02X}" for b in digest)


def check_transcript(doc, kinds, types):
    transcript = section(doc, "<!-- transcript:", "<!-- end of transcript -->")
    value = lambda label, text=transcript: re.search(rf"^{re.escape(label)}\s+(\S+)$", text, re.M).group(1)
    nonces = {side: bytes.fromhex(value(f"{side} pairing nonce")) for side in ("watch", "phone")}
    rekey = int(value("rekey_interval"))
    for side in ("watch", "phone"):
        public = bytes.fromhex(value(f"{side} static public key"))
        check(colon(hashlib.sha256(public).digest()) == value(f"{side} fingerprint"),
              f"{side} fingerprint = SHA-256 of its public key")
    checked = 0
    for suite_text in re.split(r"^### ", transcript, flags=re.M)[1:]:
        if not suite_text.startswith(("AES", "ChaCha")):
            continue
        title = suite_text.splitlines()[0]
        blocks = hex_blocks(suite_text)
        steps = [decode(kinds, types, bytes.fromhex(b)) for b in blocks[:1] + blocks[2:5]]
        m = re.search(r"offered 0x(\w+), suite (\d+), rekey_interval (\d+)", suite_text)
        offered, suite, interval = int(m.group(1), 16), int(m.group(2)), int(m.group(3))
        check(interval == rekey, f"{title}: the rekey interval")
        for number, (name, fields) in enumerate(steps, 1):
            check(name == "Handshake" and fields["step"] == number, f"{title}: step {number}")
            expected = (offered, suite, interval) if number == 1 else (0, 0, 0)
            check((fields["offered"], fields["suite"], fields["rekey_interval"]) == expected,
                  f"{title}: step {number} parameters")
            check(encode(kinds, types, name, fields) == bytes.fromhex(blocks[[0, 2, 3, 4][number - 1]]),
                  f"{title}: step {number} encodes back")
        check(len(bytes.fromhex(steps[0][1]["message"])) == 32, f"{title}: step 1 is `e`, 32 bytes")
        prologue = b"interconnect noise v1" + bytes([offered, suite]) + interval.to_bytes(4, "little")
        check(prologue.hex() == blocks[1], f"{title}: the prologue")
        commitment = re.search(r"SHA-256\(phone nonce\) = ([0-9a-f]{64})", suite_text).group(1)
        check(hashlib.sha256(nonces["phone"]).hexdigest() == commitment, f"{title}: step 2 commits")
        check(steps[3][1]["message"] == nonces["phone"].hex(), f"{title}: step 4 is the phone nonce")
        hh = bytes.fromhex(value("handshake hash", suite_text))
        digest = hashlib.sha256(b"interconnect pairing code v1" + hh + nonces["watch"] + nonces["phone"]).digest()
        code = int.from_bytes(digest[:4], "big") % 1_000_000
        check(f"{code:06}" == value("pairing code", suite_text), f"{title}: the pairing code")

        # Sealed frames: one segment each, then one of several segments.
        for block, first, inner_name in ((blocks[5], 0, 1), (blocks[6], rekey, 2)):
            name, fields = decode(kinds, types, bytes.fromhex(block))
            check(name == "Sealed" and fields["nonce"] == first, f"{title}: sealed at nonce {first}")
            inner = frame(2, varint(inner_name))[:-4]
            check(inner.hex() in suite_text, f"{title}: the inner ping without its CRC")
            check(len(bytes.fromhex(fields["ciphertext"])) == len(inner) + 16, f"{title}: one tag")
            ad = first.to_bytes(8, "little") + (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
            check(f"associated data `{ad.hex()}`" in suite_text, f"{title}: associated data at {first}")
            check(encode(kinds, types, name, fields) == bytes.fromhex(block), f"{title}: sealed encodes back")
        m = re.search(r"at nonce (\d+), a `Data` frame .* for i < (\d+): inner length (\d+), (\d+) segments, "
                      r"so it starts at nonce (\d+) under k(\d+)\. Outer frame: (\d+) bytes, SHA-256 `(\w+)`", suite_text)
        asked, payload_len, inner_len, segments, start, epoch, outer_len, outer_sha = (
            int(g) if g.isdigit() else g for g in m.groups())
        data = frame(0x13, varint(1) + varint(1) + types.encode("content_type", "Binary")
                     + types.encode("exchange", "OneWay") + bytes(i % 251 for i in range(payload_len)))
        check(len(data) - 4 == inner_len, f"{title}: inner length without CRC")
        check(math.ceil(inner_len / 65519) == segments, f"{title}: segments of 65,519 bytes")
        epoch_of = lambda n: n // rekey
        crosses = epoch_of(asked) != epoch_of(asked + segments - 1)
        check(crosses and start == (epoch_of(asked) + 1) * rekey and epoch_of(start) == epoch,
              f"{title}: a frame that would cross an epoch starts the next one")
        ciphertext_len = inner_len + 16 * segments
        check(outer_len == 6 + len(varint(start)) + ciphertext_len + 4, f"{title}: outer frame length")
        check(math.ceil(ciphertext_len / 65535) == segments, f"{title}: the receiver's cut into 65,535")
        several = suite_text[m.end():suite_text.index("A batch, ")]
        rows = re.findall(r"^(\d+)  ([0-9a-f]{32})  ([0-9a-f]{32})$", several, re.M)
        check(len(rows) == segments, f"{title}: one row per segment")
        for i, (nonce, ad, _tag) in enumerate(rows):
            expected = start.to_bytes(8, "little") + segments.to_bytes(4, "little") + i.to_bytes(4, "little")
            check(int(nonce) == start + i and ad == expected.hex(), f"{title}: segment {i}")
        check(len(outer_sha) == 64, f"{title}: the outer frame's digest is given")
        # A batch: two inner frames in one sealed frame, cut apart by their headers.
        m = re.search(r"A batch, [^:]*: at nonce (\d+), inner `Ping \{ nonce: 3 \}` `(\w+)` and "
                      r"`Pong \{ nonce: 3 \}` `(\w+)` back to back, one segment, associated data "
                      r"`(\w+)`:\n\n```text\n([0-9a-f\n]+)```", suite_text)
        check(m is not None, f"{title}: a batch is shown")
        nonce, ping, pong, ad, block = m.groups()
        nonce, plain = int(nonce), bytes.fromhex(ping + pong)
        check(nonce == start + segments, f"{title}: the batch takes the next nonce")
        inner = []
        while plain:
            end = 6 + int.from_bytes(plain[3:6], "little")
            inner.append(plain[:end])
            plain = plain[end:]
        check(inner == [frame(2, varint(3))[:-4], frame(3, varint(3))[:-4]],
              f"{title}: the batch is a Ping and a Pong, each cut by its header")
        name, fields = decode(kinds, types, bytes.fromhex("".join(block.split())))
        check(name == "Sealed" and fields["nonce"] == nonce, f"{title}: the batch is sealed at {nonce}")
        check(len(bytes.fromhex(fields["ciphertext"])) == len(ping + pong) // 2 + 16,
              f"{title}: one tag for the whole batch")
        expected = nonce.to_bytes(8, "little") + (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
        check(ad == expected.hex(), f"{title}: the batch's associated data")
        # The same frames without the outer CRC, for a peer that set NO_CRC.
        m = re.search(r"to a peer whose `Hello` set `NO_CRC`: at nonce (\d+), flags `01`, no CRC "
                      r"trailer, associated data `(\w+)`:\n\n```text\n([0-9a-f\n]+)```", suite_text)
        check(m is not None, f"{title}: a frame without its CRC is shown")
        bare_nonce, bare_ad, bare_block = int(m.group(1)), m.group(2), bytes.fromhex("".join(m.group(3).split()))
        check(bare_block[1] == SEALED and bare_block[2] == NO_CRC, f"{title}: flagged NO_CRC")
        name, fields = decode(kinds, types, bare_block)
        check(name == "Sealed" and fields["nonce"] == nonce + 1, f"{title}: sealed at the next nonce")
        check(len(bytes.fromhex(fields["ciphertext"])) == len(ping + pong) // 2 + 16,
              f"{title}: the same two frames, one tag")
        check(len(bare_block) == 6 + len(varint(bare_nonce)) + len(ping + pong) // 2 + 16,
              f"{title}: no trailer after the tag")
        expected = bare_nonce.to_bytes(8, "little") + (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
        check(bare_ad == expected.hex(), f"{title}: its associated data")
        # The frame of several segments again, its tags last, for a peer that set TAGS_LAST.
        m = re.search(r"The frame of several segments again, to a peer whose `Hello` set `NO_CRC` and "
                      r"`TAGS_LAST`: at nonce (\d+), flags `03`, its (\d+) ciphertexts back to back and "
                      r"then their tags, no CRC trailer\. Outer frame: (\d+) bytes, SHA-256 `(\w+)`",
                      suite_text)
        check(m is not None, f"{title}: a frame with its tags last is shown")
        last_nonce, last_segments, last_len, last_sha = (int(g) if g.isdigit() else g for g in m.groups())
        check(last_nonce == bare_nonce + 1, f"{title}: tags last at the next nonce")
        check(last_segments == segments, f"{title}: tags last, the same segments")
        check(last_len == 6 + len(varint(last_nonce)) + inner_len + 16 * segments,
              f"{title}: tags last, the same length less the CRC")
        check(len(last_sha) == 64, f"{title}: the digest of the frame with its tags last is given")
        rows = re.findall(r"^(\d+)  ([0-9a-f]{32})  ([0-9a-f]{32})$", suite_text[m.end():], re.M)
        check(len(rows) == segments, f"{title}: tags last, one row per segment")
        for i, (nonce, ad, _tag) in enumerate(rows):
            expected = (last_nonce.to_bytes(8, "little") + segments.to_bytes(4, "little")
                        + i.to_bytes(4, "little"))
            check(int(nonce) == last_nonce + i and ad == expected.hex(), f"{title}: tags last, segment {i}")
        checked += 1
    check(checked == 2, "both suites' transcripts")
    return checked


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "crates/interconnect-proto/WIRE.md"
    doc = open(path, encoding="utf-8").read()
    check(crc32c(b"123456789") == 0xE3069283, "the CRC-32C check value")
    # BLAKE3's published vectors (empty input; "abc"), before it checks anything else.
    check(blake3(b"").hex() == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
          "BLAKE3 of the empty input")
    check(blake3(b"abc").hex() == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
          "BLAKE3 of abc")
    kinds = kinds_table(doc)
    check(kinds[SEALED][0] == "Sealed", "the kind that may go without its CRC is Sealed")
    check("Bit 0 `NO_CRC` (`0x01`)" in doc and "bit 7 `NO_CRC`" in doc, "the NO_CRC flag and capability")
    check(re.search(r"Bit 1\s+`TAGS_LAST` \(`0x02`\)", doc) and "bit 8 `TAGS_LAST`" in doc,
          "the TAGS_LAST flag and capability")
    types = Types(doc)
    examples = check_examples(doc, kinds, types)
    file_bytes = check_file_example(doc, kinds, types)
    state_updates = check_state_example(doc, kinds, types)
    durables = check_durable_example(doc, kinds, types)
    suites = check_transcript(doc, kinds, types)
    session = sys.argv[2] if len(sys.argv) > 2 else None
    links = frames = 0
    if session:
        links, frames = check_session(session, kinds, types)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        sys.exit(1)
    print(f"wire.py: {len(kinds)} kinds, {examples} examples, a {file_bytes}-byte file, "
          f"{state_updates} state updates, {durables} durable messages and the transcripts of {suites} suites decode and encode back byte for byte; every SHA-256, "
          f"BLAKE3 and layout value agrees")
    if session:
        print(f"wire.py: the recorded session ({links} links, {frames} frames) follows "
              f"\"Sessions, step by step\"")


if __name__ == "__main__":
    main()
