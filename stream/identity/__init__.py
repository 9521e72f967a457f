"""Identity enrichment: per user, the hashed identifiers seen so far, added to later events.

`profile` holds the rules (keys, what is learned, what is added); `store` what they need of a
store (and a dict for `transform`); `rocks` a partition's store on disk; `state` the stores'
lifecycle on a consumer (changelog, restore, flush before commit, forget).
"""
