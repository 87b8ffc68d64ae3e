"""Generated support tickets for the demo's text classifier: offline and seeded.

Each ticket is a short sentence built from a template, a topic's own words
(an invoice is billing, a tracking number shipping) and words every topic
shares, so the classes overlap the way real tickets do and a model is not
trivially perfect. The same seed gives the same tickets on every build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOPICS: dict[str, dict[str, list[str]]] = {
    "billing": {
        "nouns": ["invoice", "refund", "charge", "payment", "subscription", "receipt", "card"],
        "verbs": ["charged", "billed", "refunded", "overcharged", "invoiced"],
    },
    "shipping": {
        "nouns": ["package", "parcel", "delivery", "courier", "tracking number", "shipment"],
        "verbs": ["shipped", "delivered", "lost", "delayed", "returned"],
    },
    "technical": {
        "nouns": ["app", "website", "login page", "update", "error message", "screen"],
        "verbs": ["crashed", "froze", "failed", "broke", "stopped loading"],
    },
    "account": {
        "nouns": ["password", "account", "email address", "username", "profile", "settings"],
        "verbs": ["locked", "changed", "reset", "deleted", "disabled"],
    },
}
SHARED_WORDS = ["today", "again", "yesterday", "please", "urgently", "since monday", "still"]
TEMPLATES = [
    "my {noun} was {verb} {shared}",
    "why was my {noun} {verb}",
    "hello, the {noun} {verb} {shared} and nobody answers",
    "{shared} my {noun} got {verb}, can you help",
    "I think the {noun} was {verb} by mistake",
    "the {noun} is wrong, it was {verb} {shared}",
    "please check my {noun}, it {verb} {shared}",
]


@dataclass(frozen=True)
class Tickets:
    texts: list[str]
    topics: list[str]


def generate_tickets(n: int = 400, *, seed: int = 11) -> Tickets:
    """`n` tickets, topics drawn uniformly; one in ten borrows a word from another topic."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    texts, topics = [], []
    for _ in range(n):
        topic = names[int(rng.integers(len(names)))]
        # Noise: the noun sometimes comes from another topic, as in real mixed tickets.
        noun_topic = names[int(rng.integers(len(names)))] if rng.random() < 0.1 else topic
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        text = template.format(
            noun=_pick(rng, TOPICS[noun_topic]["nouns"]),
            verb=_pick(rng, TOPICS[topic]["verbs"]),
            shared=_pick(rng, SHARED_WORDS),
        )
        texts.append(text[0].upper() + text[1:])
        topics.append(topic)
    return Tickets(texts=texts, topics=topics)


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]
