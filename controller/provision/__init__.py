"""K3s provisioning over SSH: credentials, pinned host keys, jobs of idempotent steps.

    credentials.py  the controller's key pair, host keys pinned on first use
    ssh.py          one SSH session to a Pi: sudo -n, captured and redacted output, SFTP
    redact.py       keeps tokens and private keys out of output, events and logs
    model.py        Job, Step and Cluster records
    doctor.py       preflight facts and checks
    k3s.py          install/join/uninstall commands and the server-side checks
    agent_unit.py   the pi-agent systemd unit and its configuration
    steps.py        one coroutine per step
    runner.py       Provisioner: runs queued jobs under the singleton lease, bounded
    clusters.py     ClusterService: validation, membership, creating jobs
    install_key.py  the controller's key put on a Pi once, with a password not kept
    app.py          app keys and the provisioner's cleanup context (under the lease)

State lives in the store (``controller/store/``): ``store.clusters``, ``store.jobs`` (with
the queue the provisioner pops), ``store.host_keys`` and ``store.nodes``.
"""
