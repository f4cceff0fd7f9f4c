"""Server-side conversations (SPEC §5): stored multi-turn state that runs continue."""
