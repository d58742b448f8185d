"""The provider table: how each family of servers states its limits (:data:`PROVIDERS`),
and which row a server's base URL selects (:func:`provider_for`).

The provider table (:data:`PROVIDERS`) says how each family of servers states its limits.
Limits are per minute in the Outcome, whatever unit the server used; resets are seconds from
now. Where several headers state a limit on one dimension (a gateway's own and its
upstream's), the lowest is the one that binds.

==============  ===============================================================================
row             what is read
==============  ===============================================================================
``openai``      ``x-ratelimit-limit/remaining/reset-requests|tokens`` (per minute; resets as Go
                durations ``"6m0s"``, ``"20ms"``), ``retry-after-ms``, ``Retry-After``; 429
                texts "... on tokens per min (TPM): Limit 30000, Used 29937, Requested 385.
                Please try again in 644ms." (the limit and the wait are read from the text)
``azure``       ``x-ratelimit-remaining-requests|tokens`` (``-1`` ignored; a limit only when a
                deployment states a positive one), ``retry-after-ms``, ``Retry-After``; 429
                texts "... exceeded token rate limit ... Please retry after 6 seconds" and an
                API Management gateway's ``{"statusCode": 429, "message": "Rate limit is
                exceeded. Try again in 6 seconds."}``: no limit is stated, it is discovered
``anthropic``   ``anthropic-ratelimit-requests|input-tokens|tokens-limit|remaining|reset``
                (resets as RFC 3339 times; tokens: the input-token limit, else the combined
                one; output-token limits bound no estimate and are left out), ``retry-after``;
                429 ``rate_limit_error`` texts "... of 20,000 input tokens per minute"; 529
                ``overloaded_error``. The OpenAI-compatible endpoint's ``x-ratelimit-*`` too
                (resets as durations or RFC 3339 times)
``groq``        ``x-ratelimit-*`` where ``-requests`` counts per *day* (left out: no minute
                rate) and ``-tokens`` per minute; 429 texts as OpenAI's
``together``    ``x-ratelimit-limit|remaining|reset`` and ``x-tokenlimit-limit|remaining``,
                counted per *second* (times 60 here); 429 ``dynamic_request_limited`` /
                ``dynamic_token_limited``; a 503 is the platform at capacity
``fireworks``   ``x-ratelimit-limit|remaining-tokens-prompt`` (input tokens per minute;
                ``-tokens-generated`` bounds output only and is left out), ``x-ratelimit-*``
                as OpenAI when sent; no ``Retry-After``; 503 "Service Overloaded"
``litellm``     a LiteLLM proxy: its ``x-ratelimit-*`` (the key's limits, or its upstream's
                in OpenAI form), its per-scope ``x-ratelimit-{api_key,team,user...}-limit|
                remaining-requests|tokens``, the upstream's ``llm_provider-x-ratelimit-*``;
                429 texts "Limit type: requests. Current limit: 15" and "current rpm: 16, rpm
                limit: 15, ..." (``max_parallel_requests`` reached: overloaded); its
                ``Retry-After`` is the window's length, so only a second of it is sure
``none``        servers that state nothing (vLLM, Ollama, llama.cpp): only 429s and 503s
``auto``        any host not named above: every family but Together's and Groq's units
==============  ===============================================================================
"""

from __future__ import annotations

import urllib.parse

import msgspec

__all__ = ["PROVIDERS", "Provider", "provider_for"]


class Provider(msgspec.Struct, frozen=True):
    """One row of the provider table: how a family of servers states its limits.

    Attributes:
        name: the row's name (``"openai"``, ``"azure"``, ...).
        hosts: host names that select this row (``provider_for``); one starting with a dot
            is a suffix (``".openai.azure.com"``).
        x_ratelimit: read the ``x-ratelimit-limit|remaining|reset-requests|tokens`` headers.
        anthropic: read the ``anthropic-ratelimit-*`` headers.
        daily_requests: ``x-ratelimit-*-requests`` count per day (Groq), not per minute.
        per_second: read Together's ``x-ratelimit-limit|remaining|reset`` and
            ``x-tokenlimit-limit|remaining``, which count per second.
        prompt_tokens: read Fireworks' ``x-ratelimit-limit|remaining-tokens-prompt``.
        gateway: read a LiteLLM proxy's per-scope headers and its upstream's
            ``llm_provider-x-ratelimit-*``; its ``Retry-After`` is a window's length.

    >>> PROVIDERS["groq"].daily_requests, PROVIDERS["none"].x_ratelimit
    (True, False)
    """

    name: str
    hosts: tuple[str, ...] = ()
    x_ratelimit: bool = True
    anthropic: bool = False
    daily_requests: bool = False
    per_second: bool = False
    prompt_tokens: bool = False
    gateway: bool = False


#: The provider table, most specific first; ``auto`` is for every other host.
PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    Provider("openai", ("api.openai.com",)),
    Provider("azure", (".openai.azure.com", ".cognitiveservices.azure.com",
                       ".services.ai.azure.com", ".azure-api.net")),
    Provider("anthropic", ("api.anthropic.com",), anthropic=True),
    Provider("groq", ("api.groq.com",), daily_requests=True),
    Provider("together", ("api.together.xyz", "api.together.ai"), per_second=True),
    Provider("fireworks", ("api.fireworks.ai",), prompt_tokens=True),
    Provider("litellm", gateway=True),
    Provider("none", x_ratelimit=False),
    Provider("auto", anthropic=True, prompt_tokens=True, gateway=True),
)}


def provider_for(base_url: str | None, name: str | None = None) -> Provider:
    """The table row for a server: by ``name`` when given, else by the base URL's host.

    >>> provider_for("https://api.groq.com/openai/v1").name
    'groq'
    >>> provider_for("https://my-east.openai.azure.com/openai").name
    'azure'
    >>> provider_for("http://127.0.0.1:8000/v1").name, provider_for(None, "LiteLLM").name
    ('auto', 'litellm')
    """
    if name is not None:
        try:
            return PROVIDERS[str(name).strip().lower()]
        except KeyError:
            from pipeline.errors import ConfigError

            raise ConfigError(f"unknown provider {name!r}; known: "
                              f"{', '.join(PROVIDERS)}") from None
    host = ""
    if base_url:
        try:
            host = (urllib.parse.urlsplit(str(base_url)).hostname or "").lower()
        except ValueError:
            host = ""
    for provider in PROVIDERS.values():
        if any(host == h or (h.startswith(".") and host.endswith(h)) for h in provider.hosts):
            return provider
    return PROVIDERS["auto"]

