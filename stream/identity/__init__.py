"""Identity enrichment: per user, the hashed identifiers seen so far, added to later events.

`profile` holds the rules (keys, what is learned, what is added), `store` the per-partition
key-value stores, `state` their lifecycle on a consumer (changelog, restore, flush before commit).
"""
