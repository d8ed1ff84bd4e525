"""The Hugging Face hub, through huggingface_hub: list a repository's files, download one.

huggingface_hub does the HTTP: the endpoint (HF_ENDPOINT or a mirror), the token (HF_TOKEN),
redirects to the CDN, the progress bar on stderr, and resuming a transfer whose connection broke
with a Range request. Its errors become HubError here, once.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pool_ctl.errors import HubError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int | None
    sha256: str | None  # the LFS object id, when the hub stores the file in LFS


@dataclass(frozen=True)
class Hub:
    endpoint: str | None
    token: str | None

    def list_files(self, repo: str, revision: str | None) -> dict[str, RemoteFile]:
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        api = HfApi(endpoint=self.endpoint, token=self.token)
        with self._errors(repo, revision):
            entries = list(api.list_repo_tree(repo, recursive=True, revision=revision))
        files: dict[str, RemoteFile] = {}
        for e in entries:
            if isinstance(e, RepoFile):
                sha = e.lfs.sha256 if e.lfs is not None else None
                files[e.path] = RemoteFile(e.path, e.size, sha)
        return files

    def download(self, repo: str, filename: str, revision: str | None, local_dir: Path) -> Download:
        """Fetch `filename` into `local_dir` (kept there as the model file) and say which commit."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

        with self._errors(repo, revision, filename):
            url = hf_hub_url(repo, filename, revision=revision, endpoint=self.endpoint)
            meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
            commit = meta.commit_hash
            # Pinning the commit makes the file match the metadata just read, even if the
            # branch moves while the transfer runs.
            path = hf_hub_download(
                repo,
                filename,
                revision=commit or revision,
                local_dir=local_dir,
                endpoint=self.endpoint,
                token=self.token,
            )
        etag = (meta.etag or "").strip('"').lower()
        return Download(
            path=Path(str(path)),
            commit=commit,
            size=meta.size,
            sha256=etag if _SHA256.match(etag) else None,
        )

    @contextlib.contextmanager
    def _errors(
        self, repo: str, revision: str | None, filename: str | None = None
    ) -> Iterator[None]:
        import httpx2
        from huggingface_hub import errors

        where = self.endpoint or "https://huggingface.co (set HF_ENDPOINT for a mirror)"
        what = f"{repo}:{filename}" if filename else repo
        try:
            yield
        except errors.GatedRepoError as e:
            raise HubError(
                f"{repo} is gated on the hub",
                "accept its terms on the hub website and set HF_TOKEN to a token of that account",
            ) from e
        except errors.RepositoryNotFoundError as e:
            raise HubError(
                f"repository {repo} not found at {where}",
                "check the name; for a private repository set HF_TOKEN",
            ) from e
        except errors.RevisionNotFoundError as e:
            raise HubError(
                f"revision {revision!r} not found in {repo}", "check the branch, tag or commit"
            ) from e
        except errors.RemoteEntryNotFoundError as e:
            raise HubError(f"{what} not found on the hub", "check the file name") from e
        except errors.OfflineModeIsEnabled as e:
            raise HubError(
                f"cannot fetch {what}: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE"
            ) from e
        except errors.HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else "?"
            raise HubError(
                f"the hub answered HTTP {status} for {what}",
                "retry later; for 401/403 set HF_TOKEN",
            ) from e
        except (httpx2.HTTPError, OSError) as e:
            raise HubError(
                f"cannot fetch {what} from {where}: {type(e).__name__}: {e}",
                "check the network or HF_ENDPOINT and run the same command again",
            ) from e


@dataclass(frozen=True)
class Download:
    path: Path
    commit: str | None
    size: int | None
    sha256: str | None
