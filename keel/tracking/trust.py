"""A trusted registry: Keel loads only model versions whose every file it recorded at registration.

At registration (`keel.tracking.registry.register`) Keel hashes every file of the logged model with
OpenSSF model-signing (sha256 per file; nothing ignored, symbolic links refused) and stores the
manifest (relative path -> sha256), its sha256 and, with a team key (KEEL_SIGNING_KEY), an
HMAC of it as tags of the model version in the tracking store. Before any load (scoring, the
gate's champion, a registered backbone) `verified_model` downloads the version's files into a
fresh folder and checks all of them against the manifest (no file missing, none extra, none
changed; the signature too when a key is set or the version was signed) before anything reads
them. Whoever can write only the artifact store can therefore not change what Keel runs.
docs/threat-model.md says what this stops and what it does not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
from pathlib import Path

import mlflow

from keel.core import settings
from keel.core.errors import ConfigError, UntrustedModelError

MANIFEST_FORMAT = "keel-manifest/1"
MANIFEST_TAG = "keel.manifest"  # canonical JSON: {"files": {path: sha256}, "format": ..., "model": name}
DIGEST_TAG = "keel.manifest_sha256"  # sha256 of that JSON
SIGNATURE_TAG = "keel.manifest_hmac"  # HMAC-SHA256 of that JSON under the team key
KEY_ID_TAG = "keel.signing_key_id"  # which team key signed (an HMAC of a constant: reveals nothing of the key)
MIN_KEY_LENGTH = 16
# MLflow's own loaders write this file into a local artifact store when they load a registered
# version (`models:/NAME/VERSION`): it is not the model's, Keel never reads it, and it is
# removed from the verified copy. Every other file counts.
MLFLOW_WRITES = "registered_model_meta"

# Why an HMAC and not model-signing's own signers: those are asymmetric (an elliptic-curve
# private key file signs, the public key file verifies, the result is a Sigstore bundle). Keel's
# team key is one shared secret in the environment of every process that registers or loads
# models (training and scoring containers, CI), so the signature is an HMAC-SHA256 from the
# standard library, compared in constant time, over the canonical manifest model-signing hashed.


def hash_files(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below `folder` (model-signing's file serialization;
    unlike its default, git files are not skipped: every file counts but MLflow's
    `registered_model_meta`). A symbolic link or a special file raises ValueError."""
    # Imported here: model-signing pulls in sigstore (half a second), which a command that only
    # looks a version up (the idempotent re-run of `keel predict`) never needs.
    from model_signing import hashing

    config = (hashing.Config()
              .set_ignored_paths(paths=[MLFLOW_WRITES], ignore_git_paths=False)
              .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False))
    manifest = config.hash(Path(folder))
    return {str(item.identifier): item.digest.digest_hex for item in manifest.resource_descriptors()}


def canonical(name: str, files: dict[str, str]) -> str:
    """The manifest as the one JSON text that is digested and signed."""
    return json.dumps({"format": MANIFEST_FORMAT, "model": name, "files": dict(sorted(files.items()))},
                      sort_keys=True, separators=(",", ":"))


def _checked_key(key: str, variable: str) -> bytes:
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"{variable} holds a key of {len(key)} characters; use at least 32 random characters, "
                          "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`")
    return key.encode()


def key_id(key: bytes) -> str:
    """A short public name of a team key."""
    return hmac.new(key, b"keel signing key id", hashlib.sha256).hexdigest()[:16]


def _signature(key: bytes, document: str) -> str:
    return hmac.new(key, document.encode(), hashlib.sha256).hexdigest()


def _configured_keys() -> tuple[bytes | None, dict[str, bytes]]:
    """(the signing key or None, key id -> key for every key that verifies)."""
    current = settings.signing_key()
    signing = _checked_key(current, "KEEL_SIGNING_KEY") if current else None
    keys = [_checked_key(k, "KEEL_SIGNING_KEY_PREVIOUS") for k in settings.previous_signing_keys()]
    if signing is not None:
        keys.insert(0, signing)
    return signing, {key_id(k): k for k in keys}


def manifest_tags(name: str, folder: Path) -> dict[str, str]:
    """The model-version tags that record every file below `folder` (signed with the team key when set)."""
    signing, _ = _configured_keys()
    document = canonical(name, hash_files(folder))
    tags = {MANIFEST_TAG: document, DIGEST_TAG: hashlib.sha256(document.encode()).hexdigest()}
    if signing is not None:
        tags[SIGNATURE_TAG] = _signature(signing, document)
        tags[KEY_ID_TAG] = key_id(signing)
    return tags


def download(artifact_uri: str, destination: Path) -> Path:
    """The files at `artifact_uri`, copied below `destination` (nothing is read or run)."""
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination)))


def registration_tags(client, name: str, model_uri: str) -> dict[str, str]:
    """The manifest tags of the model just logged at `model_uri`, from the same artifact
    location a later load downloads (the logged model's, for a `models:/m-...` URI)."""
    location = model_uri
    if model_uri.startswith("models:/m-"):
        location = client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    with tempfile.TemporaryDirectory(prefix="keel-register-") as tmp:
        return manifest_tags(name, download(location, Path(tmp)))


def _refuse(name: str, version: str, problem: str, fix: str) -> UntrustedModelError:
    return UntrustedModelError(f"model {name} version {version} {problem}, so Keel does not load it; {fix}")


REREGISTER = "register the model again with `keel train`"


def check_tags(name: str, version: str, tags: dict[str, str], require_signature: bool = True) -> dict:
    """The manifest recorded in the tracking store for a version, once its digest and signature
    check out; raises UntrustedModelError otherwise. Reads no artifact."""
    document = tags.get(MANIFEST_TAG)
    if not document:
        raise _refuse(name, version, "has no manifest recorded by Keel (it was registered by hand, e.g. with mlflow, "
                      "or by a Keel release from before manifests)", REREGISTER)
    if not hmac.compare_digest(hashlib.sha256(document.encode()).hexdigest(), tags.get(DIGEST_TAG, "")):
        raise _refuse(name, version, f"has a {MANIFEST_TAG} tag that does not match its {DIGEST_TAG} tag "
                      "(the registry's tags were edited)", REREGISTER)
    try:
        manifest = json.loads(document)
        files = manifest["files"]
        valid = (manifest["format"] == MANIFEST_FORMAT and isinstance(files, dict)
                 and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()))
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise _refuse(name, version, f"has a {MANIFEST_TAG} tag Keel cannot read", REREGISTER)
    if manifest["model"] != name:
        raise _refuse(name, version, f"carries the manifest of model {manifest['model']} (copied tags)", REREGISTER)
    signing, keys = _configured_keys()
    signature, signer = tags.get(SIGNATURE_TAG), tags.get(KEY_ID_TAG, "")
    if signature:
        if not keys:
            raise _refuse(name, version, f"is signed with team key {signer} and KEEL_SIGNING_KEY is not set",
                          "set KEEL_SIGNING_KEY to the team key that signed it (docs/threat-model.md)")
        key = keys.get(signer)
        if key is None:
            current = f"key {key_id(signing)}" if signing is not None else "no key"
            raise _refuse(name, version, f"is signed with team key {signer}, and KEEL_SIGNING_KEY holds {current} "
                          "and KEEL_SIGNING_KEY_PREVIOUS none of that id",
                          "set the team key that signed it (after a rotation, list the old key in "
                          "KEEL_SIGNING_KEY_PREVIOUS)")
        if not hmac.compare_digest(_signature(key, document), signature):
            raise _refuse(name, version, f"has a manifest whose signature does not verify with team key {signer} "
                          "(the registry's tags were edited)", REREGISTER)
    elif keys and require_signature:
        raise _refuse(name, version, "is not signed, and a team key is set (KEEL_SIGNING_KEY)",
                      "register it again with the key set, or sign it after checking it "
                      "(`keel sign NAME VERSION`, docs/threat-model.md)")
    return manifest


def check_files(name: str, version: str, expected: dict[str, str], folder: Path) -> None:
    """Every file below `folder` is in `expected` with the same sha256, and none is missing;
    raises UntrustedModelError naming the first file that differs."""
    def first(paths: list[str]) -> str:
        shown = paths[0] if paths[0].isprintable() and len(paths[0]) <= 200 else ascii(paths[0][:200])
        return shown + (f" (and {len(paths) - 1} more)" if len(paths) > 1 else "")

    fix = (f"the artifact store was changed since registration: find out who changed it, then {REREGISTER} "
           f"or serve the previous champion with `keel rollback {name}`")
    written = folder / MLFLOW_WRITES
    if written.is_symlink() or written.is_dir():  # what MLflow writes is one plain file; nothing hides below it
        raise _refuse(name, version, f"holds {MLFLOW_WRITES} as a folder or link, not MLflow's file", fix)
    try:
        actual = hash_files(folder)
    except ValueError:  # a symbolic link or special file
        odd = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_symlink()
                     or not (p.is_file() or p.is_dir()))
        raise _refuse(name, version, f"holds {first(odd or ['a path'])}, which is not a plain file", fix) from None
    extra = sorted(set(actual) - set(expected))
    missing = sorted(set(expected) - set(actual))
    changed = sorted(p for p in set(actual) & set(expected) if not hmac.compare_digest(actual[p], expected[p]))
    if extra:
        raise _refuse(name, version, f"holds {first(extra)}, a file Keel did not register", fix)
    if missing:
        raise _refuse(name, version, f"lacks {first(missing)}, a file Keel registered", fix)
    if changed:
        raise _refuse(name, version, f"holds {first(changed)}, whose sha256 differs from the one Keel recorded", fix)


def verified_model(client, name: str, version: str, destination: Path) -> Path:
    """The version's files, downloaded below `destination` and checked against the manifest
    Keel recorded at registration (and its signature); only then may anything read them."""
    manifest = check_tags(name, version, client.get_model_version(name, version).tags or {})
    folder = download(client.get_model_version_download_uri(name, version), destination)
    check_files(name, version, manifest["files"], folder)
    (folder / MLFLOW_WRITES).unlink(missing_ok=True)
    return folder


def sign_version(client, name: str, version: str) -> str:
    """Signs a version's recorded manifest with the current team key after checking every file
    against it: for versions registered before a key was set, or re-signing after a rotation
    (the old key listed in KEEL_SIGNING_KEY_PREVIOUS). Returns the key id."""
    signing, _ = _configured_keys()
    if signing is None:
        raise ConfigError("KEEL_SIGNING_KEY is not set; set the team key to sign with")
    tags = client.get_model_version(name, version).tags or {}
    manifest = check_tags(name, version, tags, require_signature=False)
    with tempfile.TemporaryDirectory(prefix="keel-sign-") as tmp:
        folder = download(client.get_model_version_download_uri(name, version), Path(tmp))
        check_files(name, version, manifest["files"], folder)
    client.set_model_version_tag(name, version, SIGNATURE_TAG, _signature(signing, tags[MANIFEST_TAG]))
    client.set_model_version_tag(name, version, KEY_ID_TAG, key_id(signing))
    return key_id(signing)
