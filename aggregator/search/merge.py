"""Merging the organisations' answers into one ranked list.

Duplicates are recognised by randtag alone: two organisations that return the
same video get one result that names both. Relevance follows the idea of
reciprocal-rank scoring: a video scores 1/position in each organisation's
answer that holds it, summed, so a video high in several answers beats one
high in a single answer. Every tie breaks on the randtag, so the same answers
always give the same order, and so the same feed bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from aggregator.model import EPOCH, Result, Sort, Video


def merge(answers: Sequence[tuple[str, Sequence[Video]]], sort: Sort = Sort.RELEVANCE) -> list[Result]:
    """`answers` are (org id, videos in that org's order), in configuration order."""
    videos, ranks = gather(answers)
    results = []
    for tag, placed in ranks.items():
        if len(placed) == 1:  # most videos: one org holds them (no generators for those)
            org, position = placed[0]
            results.append(Result(videos[tag], (org,), round(1.0 / position, 9)))
        else:
            score = round(sum(1.0 / position for _, position in placed), 9)
            results.append(Result(videos[tag], tuple(org for org, _ in placed), score))
    if sort is Sort.DATE:
        results.sort(key=lambda r: (-(r.video.published or EPOCH).timestamp(), r.video.randtag))
    else:
        results.sort(key=lambda r: (-r.score, r.video.randtag))
    return results


def gather(
    answers: Sequence[tuple[str, Sequence[Video]]],
) -> tuple[dict[str, Video], dict[str, list[tuple[str, int]]]]:
    """One video per randtag (the richest view of it), and where each org placed it: (org, position)
    in the order the orgs came. An org that lists a video twice counts once, where it first did."""
    videos: dict[str, Video] = {}
    ranks: dict[str, list[tuple[str, int]]] = {}
    for org_id, org_videos in answers:
        seen_here: set[str] = set()
        for position, video in enumerate(org_videos, start=1):
            tag = video.randtag
            if tag in seen_here:
                continue
            seen_here.add(tag)
            videos[tag] = richest(videos[tag], video) if tag in videos else video
            ranks.setdefault(tag, []).append((org_id, position))
    return videos, ranks


def richest(first: Video, other: Video) -> Video:
    """One video from two views of it: keep every field either view knows."""
    duration_ms = first.duration_ms if first.duration_ms is not None else other.duration_ms
    return replace(
        first,
        summary=first.summary if len(first.summary) >= len(other.summary) else other.summary,
        published=first.published or other.published,
        author=first.author or other.author,
        thumbnail_url=first.thumbnail_url or other.thumbnail_url,
        plays=max((p for p in (first.plays, other.plays) if p is not None), default=None),
        duration_ms=duration_ms,
        duration_pending=duration_ms is None and (first.duration_pending or other.duration_pending),
    )
