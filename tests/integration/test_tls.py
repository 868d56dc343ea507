"""HTTPS and WSS served directly with a certificate, or behind a reverse proxy that is
trusted (and only then): Secure cookies and HSTS whenever the client's scheme is HTTPS."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import running_controller
from tests.support import processes
from tests.support.processes import ADMIN_TOKEN
from tests.support.waiting import wait_until


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


async def ready_over_https(url: str, trust: ssl.SSLContext) -> None:
    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as s, \
                    s.get(f"{url}/readyz") as reply:
                return reply.status == 200
        except aiohttp.ClientError:
            return False
    await wait_until(ready, 20, what="the controller over HTTPS")


async def test_https_and_wss_with_a_certificate(certificate: tuple[Path, Path],
                                               redis_url: str, tmp_path: Path) -> None:
    cert, key = certificate
    proc = processes.controller(redis_url, tmp_path / "controller.log", extra=[
        "--tls-cert", str(cert), "--tls-key", str(key)]).start()
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{proc.port}"  # type: ignore[attr-defined]
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=trust),
                cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:

            await ready_over_https(url, trust)
            async with browser.post(f"{url}/api/v1/login", json={"token": ADMIN_TOKEN},
                                    headers={"Origin": url}) as reply:
                assert reply.status == 200
                cookie = reply.headers["Set-Cookie"].lower()
                assert "secure" in cookie and "httponly" in cookie
                assert reply.headers["Strict-Transport-Security"] == "max-age=31536000"
            async with browser.ws_connect(f"wss://127.0.0.1:{proc.port}/ws",  # type: ignore[attr-defined]
                                          headers={"Origin": url}) as ws:
                await ws.send_json({"op": "ping", "ref": 1})
                assert await ws.receive_json(timeout=5) == {"type": "ws.pong", "ref": 1}
        async with aiohttp.ClientSession() as plain:  # plain HTTP is not spoken
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"http://127.0.0.1:{proc.port}/readyz"):  # type: ignore[attr-defined]
                    pass
    finally:
        proc.stop()


@pytest.mark.parametrize(("proxies", "behind_https"), [(["127.0.0.0/8"], True), ([], False)])
async def test_forwarded_headers_count_only_from_trusted_proxies(
        redis_url: str, proxies: list[str], behind_https: bool) -> None:
    async with running_controller(redis_url, trusted_proxies=proxies) as controller, \
            aiohttp.ClientSession() as client:
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        async with client.post(f"{controller.url}/api/v1/login", json={"token": ADMIN_TOKEN},
                               headers=headers) as reply:
            assert reply.status == 200
            assert ("secure" in reply.headers["Set-Cookie"].lower()) is behind_https
            assert ("Strict-Transport-Security" in reply.headers) is behind_https
        for _ in range(6):  # failures count against the client the proxy names
            async with client.post(f"{controller.url}/api/v1/login", json={"token": "x"},
                                   headers=headers) as reply:
                pass
        async with client.post(f"{controller.url}/api/v1/login", json={"token": ADMIN_TOKEN},
                               headers={"X-Forwarded-For": "203.0.113.10"}) as reply:
            # Behind a trusted proxy, another client is not locked out with the guesser.
            assert reply.status == (200 if behind_https else 429)


async def test_a_browser_logs_in_over_https_and_gets_a_secure_cookie(
        certificate: tuple[Path, Path], redis_url: str, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

    cert, key = certificate
    proc = processes.controller(redis_url, tmp_path / "controller.log", extra=[
        "--tls-cert", str(cert), "--tls-key", str(key)]).start()
    url = f"https://127.0.0.1:{proc.port}"  # type: ignore[attr-defined]
    try:
        await ready_over_https(url, ssl.create_default_context(cafile=str(cert)))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                       args=CHROMIUM_ARGS)
            context = await browser.new_context(ignore_https_errors=True)  # self-signed
            page = await context.new_page()
            await page.goto(url + "/", timeout=20_000)
            await page.fill("#token", ADMIN_TOKEN)
            await page.click("form#login button[type=submit]")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            [cookie] = await context.cookies(url)
            assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            await browser.close()
    finally:
        proc.stop()
