"""Sample catalogs for the simulated ilos: deterministic videos for the demo and the tests.

Titles, authors, dates and durations are generated from a seed, so the same
topic always gives the same videos, and a few videos are shared between
organisations (the same randtag in several catalogs), which the merge must
recognise.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from aggregator.demo.simulator import SimOrg, SimVideo

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_FIRST = [
    "Ada",
    "Ben",
    "Chiara",
    "Dmitri",
    "Elif",
    "Femi",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kavya",
    "Luca",
    "Maya",
    "Noor",
    "Omar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tariq",
]
_LAST = [
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Novak",
    "Haddad",
    "Schmidt",
    "Costa",
    "Ferreira",
    "Kowalski",
    "Nakamura",
    "O'Brien",
    "Rossi",
    "Yilmaz",
    "Dubois",
]

SAMPLE_TOPICS: dict[str, list[str]] = {
    "engineering": [
        "Statics lecture {n}: free-body diagrams",
        "Thermodynamics {n}: the second law",
        "Lab safety induction for the machine shop",
        "Signals and systems {n}: Fourier series",
        "Finite element analysis walkthrough, part {n}",
        "Capstone project kickoff {year}",
        "Circuit analysis {n}: Thevenin equivalents",
        "Materials lab: tensile testing demo",
        "Engineering onboarding: lab access and tools",
        "Fluid mechanics {n}: Bernoulli in practice",
    ],
    "medicine": [
        "Clinical skills {n}: taking a history",
        "Anatomy {n}: the brachial plexus",
        "Hand hygiene refresher {year}",
        "Pharmacology {n}: dosing in renal impairment",
        "Simulation centre orientation",
        "Resident onboarding: rotas and on-call",
        "Case conference: chest pain in the ED",
        "Suturing workshop, part {n}",
        "Ethics seminar {n}: consent and capacity",
        "Radiology rounds {n}: reading a chest X-ray",
    ],
    "hr": [
        "New starter onboarding: your first week",
        "Benefits enrolment walkthrough {year}",
        "Manager essentials {n}: giving feedback",
        "Payroll portal: submitting expenses",
        "Wellbeing webinar {n}: sleep and stress",
        "Recruitment training: fair interviews",
        "Onboarding for managers: approving leave",
        "Data protection essentials {year}",
        "Inclusive meetings {n}",
        "Performance reviews explained",
    ],
}
SHARED_TITLES = [
    "Welcome to campus: onboarding for all staff",
    "IT onboarding: accounts, Wi-Fi and MFA",
    "Fire safety and evacuation {year}",
]


def make_randtag(rng: random.Random) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(12))


def make_video(rng: random.Random, title: str, topic: str) -> SimVideo:
    published = datetime(2017, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 8 * 365 * 86400))
    duration_ms = rng.randrange(45_000, 5_400_000)
    if rng.random() < 0.1:
        duration_ms = rng.randrange(3_600_000, 10_800_000)  # some run past an hour
    return SimVideo(
        randtag=make_randtag(rng),
        title=title,
        author=f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        published=published,
        duration_ms=duration_ms,
        plays=rng.randrange(0, 5000),
        description=f"Recorded for {topic}. "
        + rng.choice(
            [
                "Slides are linked in the course page.",
                "Captions available.",
                "Part of the <b>core</b> series.",
                "Questions welcome in the forum & chat.",
            ]
        ),
    )


def sample_catalog(topic: str, count: int = 40, seed: int | str = 0) -> list[SimVideo]:
    """A deterministic catalog: the same topic and seed always give the same videos."""
    rng = random.Random(f"{topic}:{seed}")
    patterns = SAMPLE_TOPICS.get(topic) or [f"{topic.title()} lecture {{n}}"]
    videos = []
    for i in range(count):
        pattern = patterns[i % len(patterns)]
        title = pattern.format(n=i // len(patterns) + 1, year=2018 + i % 7)
        videos.append(make_video(rng, title, topic))
    return videos


def shared_videos(seed: int | str = 0) -> list[SimVideo]:
    """Videos that several organisations share: the same randtag in more than one catalog."""
    rng = random.Random(f"shared:{seed}")
    return [make_video(rng, t.format(year=2024), "all staff") for t in SHARED_TITLES]


def demo_orgs(keys: dict[str, str]) -> list[SimOrg]:
    """The sample organisations of `ilos-aggregator demo`, one per configured key.

    Between them they cover the evidence: RSS with a clock `duration` child,
    RSS without one (durations come from the metadata endpoint), and Atom with
    durations in milliseconds; a few videos appear in every organisation.
    """
    styles = [("rss", None), ("rss", "clock"), ("atom", "ms")]
    shared = shared_videos()
    orgs = []
    for i, (org_id, key) in enumerate(keys.items()):
        feed_format, duration_child = styles[i % len(styles)]
        catalog = sample_catalog(org_id if org_id in SAMPLE_TOPICS else list(SAMPLE_TOPICS)[i % 3])
        orgs.append(
            SimOrg(
                org_id,
                key,
                catalog + shared,
                feed_format=feed_format,
                duration_child=duration_child,
                latency=0.05,
                metadata_latency=0.03,
            )
        )
    return orgs
