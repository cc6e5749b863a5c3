"""A tiny Faust application for the platform smoke test: counts words into a table (backed by
a changelog topic) and answers each word with its running count."""
import os

import faust

from runtime.kafka import access_from_env, faust_credentials

access = access_from_env(os.environ)  # DBAAS_KAFKA_BOOTSTRAP, DBAAS_KAFKA_USERNAME, DBAAS_KAFKA_PASSWORD
app = faust.App(
    os.environ["SMOKE_APP_ID"],
    broker=f"kafka://{access.bootstrap}",
    broker_credentials=faust_credentials(access),
    store="memory://",
    topic_partitions=1,
    topic_replication_factor=1,
    web_enabled=False,
)
words = app.topic(os.environ["SMOKE_IN"], value_type=str, value_serializer="raw")
counts_out = app.topic(os.environ["SMOKE_OUT"], value_serializer="raw")
counts = app.Table("counts", default=int, partitions=1)


@app.agent(words)
async def count(stream):
    async for word in stream:
        word = word.decode() if isinstance(word, bytes) else word
        counts[word] += 1
        await counts_out.send(key=word.encode(), value=f"{word}={counts[word]}".encode())
