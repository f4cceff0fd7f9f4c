"""Identifiers: prefix, 8 base62 characters of time, 14 random base62 characters."""

from __future__ import annotations

import time

from gateway.core.ids import BASE62, new_id, random_base62, to_base62


def test_an_id_is_the_prefix_then_22_base62_characters() -> None:
    ident = new_id("run")
    prefix, _, body = ident.partition("_")
    assert prefix == "run" and len(body) == 22 and set(body) <= set(BASE62)


def test_ids_made_later_sort_later() -> None:
    first = new_id("run")
    time.sleep(0.002)
    assert new_id("run") > first
    assert to_base62(61, 2) == "0z" and to_base62(62, 2) == "10"


def test_random_characters_cover_the_alphabet_at_every_position() -> None:
    # Uniform draws: 3,000 strings miss a character at a given position with odds ~1e-20.
    draws = [random_base62(14) for _ in range(3000)]
    assert all(len(d) == 14 for d in draws)
    for position in (0, 7, 13):
        assert {d[position] for d in draws} == set(BASE62)
    assert len(set(draws)) == len(draws)
