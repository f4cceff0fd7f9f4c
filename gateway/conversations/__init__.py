"""Server-side conversations: stored multi-turn state that runs continue."""
