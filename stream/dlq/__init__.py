"""Dead letters: writing them for the forwarder, reading, summarising and replaying them for people.

- `contract`  the reasons and header names of DESIGN §4, the only place they are spelled out
- `producer`  `DeadLetterProducer`: the forwarder's acks=all writer, sized to fit its topic
- `reader`    reads the dead-letter topic up to its end at start; `Selection` of what to act on
- `inspect`   `capi-stream dlq inspect`: summary and per-record rendering
- `replay`    `capi-stream dlq replay`: re-publish to the source topic, commit after acks

Nothing is imported here, so `stream.dlq.contract` stays cheap for the modules that only need
the reasons.
"""
