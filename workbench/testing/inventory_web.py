"""Test support for the inventory's web side: a sample inventory, a certificate authority, servers.

Fixtures (import them into a test module: ``from workbench.testing.inventory_web import web_server  # noqa: F401``):

``sample_inventory``  a small ``Inventory`` (sites, groups, a partition, datasets with blocks, files and
                      replicas) including objects with hostile names.
``certificates``      a ``CertificateAuthority`` in a temp dir with a server certificate for 127.0.0.1.
``web_server``        a ``WebServer`` over plain HTTP on a free loopback port, serving ``sample_inventory``.

``CertificateAuthority`` makes real X.509 certificates with ``cryptography``, for HTTPS tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from workbench.inventory import (Block, BlockReplica, Dataset, DatasetReplica, File, Group, Inventory, Partition,
                                 Site, SitePartition)

#: names that must show as text, never as markup, wherever the web side prints them
HOSTILE_DATASET = '/<script>alert("dataset")</script>/Run&Co/AOD'
HOSTILE_SITE = "T3_<img src=x onerror=alert(1)>"


def build_sample_inventory(inventory: Inventory | None = None, datasets: int = 4, blocks: int = 3,
                           files: int = 2) -> Inventory:
    """Fill ``inventory`` (a new one by default) with a small, fully linked sample.

    Three regular sites and one with a hostile name; groups AnalysisOps and DataOps; partition
    ``Physics`` with quotas; ``datasets`` datasets ``/Sample{i}/Run2024-v1/AOD`` with ``blocks``
    blocks of ``files`` files of 1 GB each, replicated to one or two sites; and the hostile dataset.
    """
    inventory = inventory if inventory is not None else Inventory("sample")
    sites = [inventory.update(Site(name, host=f"{name.lower()}.example.org", storage_type=kind))
             for name, kind in (("T1_US_FNAL_Disk", "disk"), ("T2_CH_CERN", "disk"), ("T1_US_FNAL_MSS", "mss"))]
    hostile_site = inventory.update(Site(HOSTILE_SITE, host="evil.example.org"))
    analysis = inventory.update(Group("AnalysisOps", olevel="dataset"))
    data_ops = inventory.update(Group("DataOps"))
    physics = inventory.update(Partition("Physics", condition="group in [AnalysisOps, DataOps]"))
    for index, site in enumerate(sites):
        inventory.update(SitePartition(site, physics, quota=(index + 1) * 100 * 10**9))
    names = [f"/Sample{i}/Run2024-v1/AOD" for i in range(datasets)] + [HOSTILE_DATASET]
    for number, name in enumerate(names):
        dataset = inventory.update(Dataset(name, status="valid", data_type="data", software_version="CMSSW_14_0"))
        for b in range(blocks):
            block = inventory.update(Block(f"b{b:04d}", dataset, size=files * 10**9, num_files=files))
            for f in range(files):
                inventory.update(File(f"/store/data{name}/{b:04d}/file{f}.root", block, size=10**9,
                                      adler32=f"{number * 1000 + b * 10 + f:08x}"))
        holders = [sites[number % 3]] + ([sites[(number + 1) % 3]] if number % 2 == 0 else [])
        if name == HOSTILE_DATASET:
            holders = [hostile_site]
        group = analysis if number % 2 == 0 else data_ops
        for site in holders:
            inventory.update(DatasetReplica(dataset, site, growing=False, group=group))
            for block in list(dataset.blocks.values()):
                inventory.update(BlockReplica(block, site, group=group, is_custodial=site.name.endswith("MSS")))
    return inventory


class CertificateAuthority:
    """A CA in ``directory`` that signs server and client certificates (EC P-256, valid one day).

    ::

        ca = CertificateAuthority(tmp_path)
        server_cert, server_key = ca.server()                  # for 127.0.0.1
        cert, key = ca.client("alice")                         # subject CN=alice,O=workbench tests
        ca.client_context("alice")                             # an ssl.SSLContext presenting it
    """

    ORGANIZATION = "workbench tests"

    def __init__(self, directory: str | Path, name: str = "workbench test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.ORGANIZATION)])
        self.certificate = (self._builder(subject, subject, self.key.public_key())
                            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                         content_commitment=False, key_encipherment=False,
                                                         data_encipherment=False, key_agreement=False,
                                                         encipher_only=False, decipher_only=False), critical=True)
                            .sign(self.key, hashes.SHA256()))
        self.cafile = self.directory / "ca.pem"
        self.cafile.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
                 ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def _issue(self, stem: str, subject: x509.Name, usage: x509.ObjectIdentifier,
               san: x509.GeneralName | None = None) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (self._builder(subject, self.certificate.subject, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path, key_path

    def server(self, address: str = "127.0.0.1") -> tuple[Path, Path]:
        """A server certificate and key for ``address`` (an IP address, in the SAN)."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
        return self._issue("server", subject, ExtendedKeyUsageOID.SERVER_AUTH,
                           x509.IPAddress(ipaddress.ip_address(address)))

    def subject(self, user: str) -> str:
        """The RFC 4514 DN of ``client(user)``'s certificate."""
        return f"CN={user},O={self.ORGANIZATION}"

    def client(self, user: str) -> tuple[Path, Path]:
        """A client certificate and key with subject ``CN=user,O=workbench tests``."""
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.ORGANIZATION),
                             x509.NameAttribute(NameOID.COMMON_NAME, user)])
        return self._issue(f"client-{user}", subject, ExtendedKeyUsageOID.CLIENT_AUTH)

    def client_context(self, user: str | None = None, trust: Path | None = None) -> ssl.SSLContext:
        """A client ``SSLContext`` trusting this CA (or ``trust``), presenting ``user``'s certificate if given."""
        context = ssl.create_default_context(cafile=str(trust or self.cafile))
        if user is not None:
            cert, key = self.client(user)
            context.load_cert_chain(str(cert), str(key))
        return context


@pytest.fixture
def sample_inventory() -> Iterator[Inventory]:
    """A fresh sample inventory (see ``build_sample_inventory``), its event thread closed after."""
    inventory = build_sample_inventory()
    yield inventory
    inventory.close()


@pytest.fixture
def certificates(tmp_path: Path) -> CertificateAuthority:
    """A certificate authority in a temp dir."""
    return CertificateAuthority(tmp_path / "ca")


@pytest.fixture
def web_server(sample_inventory: Inventory) -> Iterator[object]:
    """A plain-HTTP ``WebServer`` on a free loopback port over ``sample_inventory``."""
    from workbench.inventory.web import WebServer

    server = WebServer(sample_inventory, port=0).start()
    yield server
    server.stop()
