"""The MPP HTTP wire: challenges as mppx serializes them, credentials, receipts; hostile headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stablestudio_widgets.mpp import b64url_json, credential, decode_receipt, parse_challenges, source_did

V = json.loads((Path(__file__).parent / "data" / "tempo_vectors.json").read_text())


def test_mppx_challenge_vector():
    (ch,), problems = parse_challenges(V["www_authenticate"])
    assert not problems
    assert ch.id == V["challenge"]["id"] and ch.realm == "stablestudio.dev"
    assert (ch.method, ch.intent, ch.expires) == ("tempo", "charge", "2030-01-01T00:05:00.000Z")
    assert ch.description == 'Nano Banana \u2014 image "x"'  # mppx's \\u2014 extension and \\" unescaped
    assert ch.request == V["request_b64"] and ch.decoded == V["challenge"]["request"]


def test_several_challenges_in_one_value_beside_other_schemes():
    value = 'Bearer realm="x", ' + V["www_authenticate"] + ", Payment " + V["www_authenticate_opaque"][8:]
    found, problems = parse_challenges(value)
    assert [c.id for c in found] == V["multi_parsed_ids"] and not problems
    assert found[1].opaque == "eyJyb3V0ZSI6ImpvYnMifQ" and found[1].decoded["amount"] == "0"
    # the same as two header lines, and with the scheme in another case
    found2, _ = parse_challenges([V["www_authenticate"], "payment " + V["www_authenticate_opaque"][8:]])
    assert [c.id for c in found2] == V["multi_parsed_ids"]


def test_payment_inside_a_quoted_string_is_not_a_challenge():
    value = V["www_authenticate"].replace('description="Nano', 'description="x, Payment id=\\"evil\\", Nano')
    (ch,), _ = parse_challenges(value)
    assert ch.id == V["challenge"]["id"] and "Payment id=" in ch.description


def test_unknown_parameters_ignored():
    (ch,), problems = parse_challenges(V["www_authenticate"] + ', future="1", other=token')
    assert ch.id == V["challenge"]["id"] and not problems


@pytest.mark.parametrize("mutate, why", [
    (lambda v: v + ', realm="again"', "duplicate"),
    (lambda v: v.replace('request="', 'request="@@'), "base64url JSON"),
    (lambda v: v.replace('method="tempo"', 'method="Tempo!"'), "method"),
    (lambda v: v.replace('expires="2030-01-01T00:05:00.000Z"', 'expires="tomorrow"'), "RFC 3339"),
    (lambda v: v.replace('id="DXrq', 'idx="DXrq'), "missing id"),
    (lambda v: v[:-1], "unterminated"),
    (lambda v: v.replace(V["request_b64"], "A" * 17000), "16 KiB"),
])
def test_malformed_challenges_are_set_aside_with_a_reason(mutate, why):
    found, problems = parse_challenges(mutate(V["www_authenticate"]))
    assert found == [] and len(problems) == 1 and why in problems[0]


def test_a_bad_challenge_does_not_hide_a_good_one():
    bad = 'Payment id="x", realm="r", method="tempo", intent="charge", request="!!"'
    found, problems = parse_challenges([bad, V["www_authenticate"]])
    assert [c.id for c in found] == [V["challenge"]["id"]] and len(problems) == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_headers_never_raise(value):
    parse_challenges(value)
    parse_challenges("Payment " + value)


def test_credential_echoes_the_challenge_exactly():
    (ch,), _ = parse_challenges(V["www_authenticate"])
    expected = json.loads(V["credential_json"])
    header, body = credential(ch, expected["payload"], expected["source"])
    assert header.startswith("Payment ") and "=" not in header  # exactly "Payment ", base64url without padding
    assert b64url_json(header[len("Payment "):], "credential") == body == expected  # mppx's own credential


def test_source_did():
    assert source_did(42431, "0xAbC") == "did:pkh:eip155:42431:0xAbC"


def test_receipt_vector_and_hostile_receipts():
    r = decode_receipt(V["receipt"])
    assert r.success and r.method == "tempo" and r.reference == V["selfpaid_hash"]
    assert r.timestamp == "2030-01-01T00:00:01.000Z"
    for bad in (None, "", "!!!", "W10", "eyJzdGF0dXMiOjF9"):  # nothing, junk, a list, a non-string status
        got = decode_receipt(bad)
        assert got is None or not got.success
