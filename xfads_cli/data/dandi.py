"""dandi://DANDISET[@VERSION]/path/in/dandiset.nwb -> the asset's download URL, through the DANDI client
(pip install 'xfads[dandi]'). The URL it returns is read like any https:// one (data/remote.py)."""

from __future__ import annotations

import functools

from xfads_cli.errors import RemoteError, UsageError


@functools.lru_cache(maxsize=64)  # a load opens the file more than once: ask the archive once per process
def dandi_asset_url(source) -> str:
    """The content URL (S3, with redirects followed and the query stripped) of `source`'s asset."""
    try:
        from dandi.dandiapi import DandiAPIClient
    except ImportError:
        raise UsageError(f"{source.url}: dandi:// URLs need the DANDI client; pip install 'xfads[dandi]'"
                         " (or pass the asset's https:// URL)") from None
    dandiset, _, version = source.host.partition("@")
    try:
        with DandiAPIClient() as client:
            asset = client.get_dandiset(dandiset, version or None).get_asset_by_path(source.key)
            return asset.get_content_url(follow_redirects=1, strip_query=True)
    except Exception as exc:  # noqa: BLE001 - the client's NotFoundError, HTTP and network errors alike
        text = " ".join(str(exc).split())[:200]
        if "NotFound" in type(exc).__name__ or "404" in text:
            raise RemoteError(f"{source.url}: no such dandiset or asset ({text}); check the dandiset id and the"
                              " path inside it (as listed on the dandiset's page)") from None
        raise RemoteError(f"{source.url}: the DANDI archive could not be asked for the asset"
                          f" ({type(exc).__name__}: {text}); try again later", exit_code=1) from None
