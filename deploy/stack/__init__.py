"""The local platform launcher: runs real Kafka (KRaft), Kafka Connect with Debezium, an
Apicurio schema registry, PostgreSQL 15 and a bare GitOps repository as local processes.

``config`` resolves ports and folders, ``artifacts`` resolves the JVM parts with Maven once,
``components`` knows how to start, probe and stop each part (``engines`` the local PoP's servers,
``observability`` Prometheus), ``launcher`` orchestrates them, ``topics`` applies
``deploy/topics.yaml``.
"""
