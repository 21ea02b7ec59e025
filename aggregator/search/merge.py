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
    videos: dict[str, Video] = {}
    orgs: dict[str, list[str]] = {}
    scores: dict[str, float] = {}
    for org_id, org_videos in answers:
        seen_here: set[str] = set()
        for position, video in enumerate(org_videos, start=1):
            tag = video.randtag
            if tag in seen_here:  # an org that lists a video twice counts once
                continue
            seen_here.add(tag)
            videos[tag] = richest(videos[tag], video) if tag in videos else video
            orgs.setdefault(tag, []).append(org_id)
            scores[tag] = scores.get(tag, 0.0) + 1.0 / position
    results = [Result(videos[t], tuple(orgs[t]), round(scores[t], 9)) for t in videos]
    if sort is Sort.DATE:
        results.sort(key=lambda r: (-(r.video.published or EPOCH).timestamp(), r.video.randtag))
    else:
        results.sort(key=lambda r: (-r.score, r.video.randtag))
    return results


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
