"""The web client end to end in headless Chromium against a real local host:
accounts, following, a post with an image seen by a friend, endless
scrolling and new posts, chat with typing, read markers, presence, a push
while offline and sync after the link comes back, short links with QR codes
and clicks, settings, and errors shown in words."""

import json
import os
import re
import struct
import time
import urllib.request
import zlib

from playwright.sync_api import expect

PASSWORD = "plum-velvet-harbor-42"


def png(width=64, height=48):
    """A real PNG: a colour gradient."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 5 % 256, 160)) for x in range(width)) for y in range(height)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def sign_up(person, name):
    page = person.page
    page.goto(person.host.base + "/")
    page.get_by_role("button", name="New here? Create an account").click()
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#me")).to_have_text(name)


def status_says(page, pattern):
    expect(page.locator("#status")).to_contain_text(re.compile(pattern, re.I))


def open_profile(page, user):
    page.goto(page.url.split("#")[0] + f"#/u/{user}")
    expect(page.get_by_role("heading", level=1)).to_have_text(user)


def test_accounts_show_every_refusal_in_words(people):
    ann = people("ann")
    page = ann.page
    page.goto(ann.host.base + "/")
    ann.shoot("sign-in")
    page.get_by_role("button", name="New here? Create an account").click()
    page.get_by_label("User name").fill("ann")
    page.get_by_label("Password").fill("password123")
    page.get_by_role("button", name="Create account").click()
    status_says(page, "password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#me")).to_have_text("ann")
    # Signed out, a wrong password is refused in words; the right one works.
    page.goto(ann.host.base + "/#/settings")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill("ann")
    page.get_by_label("Password").fill("not-the-password-at-all")
    page.get_by_role("button", name="Sign in").click()
    status_says(page, "user name or password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#me")).to_have_text("ann")
    # The same user name again is refused.
    other = people("ann2")
    other.page.goto(other.host.base + "/")
    other.page.get_by_role("button", name="New here? Create an account").click()
    other.page.get_by_label("User name").fill("ann")
    other.page.get_by_label("Password").fill(PASSWORD)
    other.page.get_by_role("button", name="Create account").click()
    status_says(other.page, "taken")


def test_friends_see_each_others_posts_with_images(people, tmp_path):
    alice, bob = people("alice"), people("bob")
    sign_up(alice, "alice")
    sign_up(bob, "bob")
    # They follow each other from the profile pages.
    for me, them in ((alice, "bob"), (bob, "alice")):
        me.page.goto(me.host.base + "/#/people")
        me.page.get_by_label("Find someone by user name").fill(them)
        me.page.get_by_role("button", name="Open profile").click()
        expect(me.page.get_by_role("heading", level=1)).to_have_text(them)
        me.page.get_by_role("button", name="Follow").click()
        expect(me.page.get_by_role("button", name="Unfollow")).to_be_visible()
    expect(bob.page.get_by_text("You are friends")).to_be_visible()
    bob.shoot("profile")
    bob.page.goto(bob.host.base + "/#/people")
    expect(bob.page.locator(".people").first).to_contain_text("alice")
    bob.shoot("people")

    # Bob has his feed open; alice posts a picture.
    bob.page.goto(bob.host.base + "/#/feed")
    expect(bob.page.locator(".posts")).to_have_attribute("aria-busy", "false")
    picture = tmp_path / "sky.png"
    picture.write_bytes(png())
    page = alice.page
    page.goto(alice.host.base + "/#/feed")
    page.get_by_label("New post").fill("Clear sky over Seoul today")
    page.locator("#post-files").set_input_files(str(picture))
    expect(page.locator(".attachment")).to_contain_text("Ready (64×48)", timeout=60_000)
    alice.shoot("composer")
    page.get_by_role("button", name="Post").click()
    status_says(page, "Posted")
    mine = page.locator("article.post").first
    expect(mine).to_contain_text("Clear sky over Seoul today")

    # Bob is told of the new post and shows it; the picture loads from /media/.
    # (The page asks every 15 s and whenever it becomes visible again.)
    fresh = bob.page.get_by_role("button", name="1 new post")
    deadline = time.time() + 30
    while not fresh.is_visible() and time.time() < deadline:
        bob.page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        bob.page.wait_for_timeout(500)
    expect(fresh).to_be_visible()
    bob.page.get_by_role("button", name="1 new post").click()
    post = bob.page.locator("article.post", has_text="Clear sky over Seoul today")
    image = post.locator("img.media")
    expect(image).to_have_attribute("src", re.compile(r"/media/"))
    bob.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    src = image.get_attribute("src")
    with urllib.request.urlopen(src) as r:
        assert r.headers["content-type"] in ("image/jpeg", "image/png"), r.headers["content-type"]
        assert "immutable" in r.headers["cache-control"]
        assert r.read()[:4] in (b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"\x89PNG", b"\xff\xd8\xff\xe1"[:4])
    bob.shoot("feed")

    # Endless scrolling: 25 more posts, read 20 at a time by cursor.
    token = alice.token()
    for i in range(25):
        status, _ = alice.host.api("POST", "/api/v1/me/posts", {"text": f"note {i}"}, token)
        assert status == 201
    bob.page.reload()
    expect(bob.page.locator("article.post")).to_have_count(20)
    bob.page.locator(".sentinel").scroll_into_view_if_needed()
    expect(bob.page.locator("article.post")).to_have_count(26)
    expect(bob.page.get_by_text("You're all caught up.")).to_be_visible()

    # A post without words is refused in words, before anything is sent.
    page.get_by_role("button", name="Post").click()
    status_says(page, "Write something")


def test_chat_live_typing_read_presence_push_and_sync(people):
    carol, dave = people("carol"), people("dave")
    sign_up(carol, "carol")
    sign_up(dave, "dave")
    # Dave's phone can take pushes.
    status, _ = dave.host.api(
        "PUT", "/api/v1/me/devices", {"platform": "ios", "token": "cd" * 32}, dave.token()
    )
    assert status == 201

    open_profile(carol.page, "dave")
    carol.page.get_by_role("button", name="Message").click()
    expect(carol.page.locator(".conversation-head h1")).to_have_text("dave")
    cid = carol.page.url.split("#/chat/")[1]
    dave.page.goto(dave.host.base + "/#/chat")
    dave.page.locator(f"[data-conversation='{cid}']").click()
    expect(dave.page.locator(".conversation-head h1")).to_have_text("carol")
    # Presence: each sees the other online.
    expect(carol.page.locator(".conversation-head .typing")).to_have_text("Online", timeout=30_000)

    # Typing shows on the other side; the message arrives live.
    carol.page.get_by_label("Message", exact=True).press_sequentially("hi dave", delay=30)
    expect(dave.page.locator(".conversation-head .typing")).to_have_text("carol is typing…")
    carol.page.get_by_label("Message", exact=True).press("Enter")
    expect(dave.page.locator(".msg.theirs")).to_contain_text("hi dave")
    # Dave has it open: carol sees it read.
    expect(carol.page.locator(".msg.mine .seen")).to_have_text("Seen")
    dave.page.get_by_label("Message", exact=True).fill("hello carol")
    dave.page.get_by_role("button", name="Send").click()
    expect(carol.page.locator(".msg.theirs")).to_contain_text("hello carol")
    carol.shoot("chat")
    dave.shoot("chat-list-and-conversation")

    # The lid closes: dave's browser loses the network.
    dave.context.set_offline(True)
    expect(dave.page.locator("#link-state")).to_have_text(re.compile("Offline|Connecting"), timeout=60_000)
    # Dave's only device online is gone from the host: carol's messages
    # become a push to his phone.
    expect(carol.page.locator(".conversation-head .typing")).not_to_have_text("Online", timeout=60_000)
    for text in ("are you there?", "call me"):
        carol.page.get_by_label("Message", exact=True).fill(text)
        carol.page.get_by_role("button", name="Send").click()
        expect(carol.page.locator(".msg.mine", has_text=text)).not_to_have_class(re.compile("pending"))
    deadline = time.time() + 30
    pushes = []
    while time.time() < deadline:
        _, outbox = dave.host.api("GET", "/local/v1/outbox")
        pushes = [i for i in outbox["items"] if i["channel"] == "push" and i["body"] == "are you there?"]
        if pushes:
            break
        time.sleep(0.5)
    assert pushes and pushes[0]["to"].endswith("cd" * 4), outbox
    assert "carol" in pushes[0]["title"]

    # The lid opens: the client reconnects and syncs what it missed.
    dave.context.set_offline(False)
    expect(dave.page.locator("#link-state")).to_have_text("", timeout=60_000)
    expect(dave.page.locator(".msg.theirs", has_text="are you there?")).to_be_visible(timeout=30_000)
    expect(dave.page.locator(".msg.theirs", has_text="call me")).to_be_visible()

    # Unread counts: carol writes while dave looks at another page.
    dave.page.goto(dave.host.base + "/#/feed")
    carol.page.get_by_label("Message", exact=True).fill("one more thing")
    carol.page.get_by_role("button", name="Send").click()
    expect(dave.page.locator("#unread-total")).to_have_text("1", timeout=30_000)
    dave.page.goto(dave.host.base + "/#/chat")
    expect(dave.page.locator(f"[data-conversation='{cid}'] .badge")).to_have_text("1")
    dave.shoot("chat-list")

    # A group of three.
    sign_up(erin := people("erin"), "erin")
    carol.page.goto(carol.host.base + "/#/chat")
    carol.page.get_by_text("New conversation").click()
    carol.page.get_by_label("Chat with (user names, comma-separated)").fill("dave, erin")
    carol.page.get_by_label("Group name").fill("hiking")
    carol.page.get_by_role("button", name="Start").click()
    expect(carol.page.locator(".conversation-head h1")).to_have_text("hiking")
    carol.page.get_by_label("Message", exact=True).fill("saturday?")
    carol.page.get_by_role("button", name="Send").click()
    erin.page.goto(erin.host.base + "/#/chat")
    erin.page.get_by_text("hiking").click()
    expect(erin.page.locator(".msg.theirs")).to_contain_text("saturday?")
    expect(erin.page.locator(".msg.theirs .sender")).to_have_text("carol")
    # A conversation with only oneself is refused, and the reason shown.
    carol.page.goto(carol.host.base + "/#/chat")
    carol.page.get_by_text("New conversation").click()
    carol.page.get_by_label("Chat with (user names, comma-separated)").fill("carol")
    carol.page.get_by_role("button", name="Start").click()
    expect(carol.page.locator("#status")).to_have_attribute("data-kind", "error")


def test_short_links_with_qr_codes_and_clicks(people):
    fay = people("fay")
    sign_up(fay, "fay")
    page = fay.page
    page.goto(fay.host.base + "/#/links")
    page.get_by_label("Long URL").fill("http://landing.example/hanul/web-test")
    page.get_by_role("button", name="Shorten").click()
    row = page.locator(".link-row").first
    expect(row.locator(".long")).to_have_text("http://landing.example/hanul/web-test")
    short = row.locator("a.short").get_attribute("href")
    assert short.startswith(fay.host.base + "/")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=row.locator("img.qr").element_handle())
    # A bad URL is refused in words.
    page.get_by_label("Long URL").fill("https://exa mple.com")
    page.get_by_role("button", name="Shorten").click()
    expect(page.locator("#status")).to_have_attribute("data-kind", "error")

    # Someone follows the link, in the browser, to the landing page.
    visitor = fay.context.new_page()
    visitor.goto(short)
    assert visitor.url == "http://landing.example/hanul/web-test"
    expect(visitor.locator("body")).to_have_text("landed on /hanul/web-test")
    visitor.close()

    # The click is counted (the clicks worker aggregates within seconds).
    deadline = time.time() + 30
    while time.time() < deadline:
        page.reload()
        clicks = page.locator(".link-row .clicks").first.inner_text()
        if clicks == "1 click":
            break
        time.sleep(1)
    assert clicks == "1 click"
    page.get_by_role("button", name="Statistics").first.click()
    expect(page.locator(".stats").first).to_contain_text("1 click in all")
    fay.shoot("links")


def test_settings_save_and_show_refusals(people):
    gus = people("gus")
    sign_up(gus, "gus")
    page = gus.page
    page.goto(gus.host.base + "/#/settings")
    page.get_by_label("Text messages (SMS)").uncheck()
    page.get_by_label("Phone (international format)").fill("12345")
    page.get_by_role("button", name="Save").click()
    status_says(page, "phone")
    page.get_by_label("Phone (international format)").fill("+821012345678")
    page.get_by_role("button", name="Save").click()
    status_says(page, "saved")
    _, saved = gus.host.api("GET", "/api/v1/me/notification-settings", token=gus.token())
    assert saved["channels"]["sms"] is False and saved["phone"] == "+821012345678"
    gus.shoot("settings")
    # A password change keeps this session and ends the others.
    second = gus.context.browser.new_context()
    other = second.new_page()
    other.goto(gus.host.base + "/")
    other.get_by_label("User name").fill("gus")
    other.get_by_label("Password").fill(PASSWORD)
    other.get_by_role("button", name="Sign in").click()
    expect(other.locator("#me")).to_have_text("gus")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill("quiet-amber-lantern-77")
    page.get_by_role("button", name="Change password").click()
    status_says(page, "Password changed")
    other.goto(gus.host.base + "/#/links")
    expect(other.get_by_role("heading", name="Sign in")).to_be_visible(timeout=30_000)
    second.close()
    page.goto(gus.host.base + "/#/links")
    expect(page.get_by_role("heading", name="Links", exact=True)).to_be_visible()


def test_the_page_is_served_with_its_security_headers(host):
    with urllib.request.urlopen(host.base + "/") as r:
        csp = r.headers["content-security-policy"]
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp
        html = r.read().decode()
    asset = re.search(r'src="(/app/[0-9a-f]{12}/js/main\.js)"', html).group(1)
    with urllib.request.urlopen(host.base + asset) as r:
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_cognito_sign_up_confirm_and_sign_in(people, host):
    """On AWS the client signs people in with the Cognito user pool's API.
    Here that API is moto's; the page's settings are the ones `web publish`
    writes, pointed at it (and its CSP, which names Cognito's AWS host, is
    set aside for this page)."""
    import boto3

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    cognito = boto3.client("cognito-idp", endpoint_url=endpoint, region_name="us-east-1")
    pool = cognito.create_user_pool(PoolName="web-test", UsernameAttributes=["email"])["UserPool"]
    app = cognito.create_user_pool_client(
        UserPoolId=pool["Id"],
        ClientName="web",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]
    settings = {
        "version": "test",
        "apiBase": "",
        "socketUrl": None,
        "auth": {"kind": "cognito", "region": "us-east-1", "clientId": app["ClientId"], "endpoint": endpoint + "/"},
    }
    person = people("cognito", bypass_csp=True)
    page = person.page
    page.route("**/app/config.json", lambda r: r.fulfill(status=200, content_type="application/json", body=json.dumps(settings)))
    sent = []
    page.on("request", lambda r: r.url.startswith(host.base + "/api/") and sent.append(r.headers.get("authorization")))
    issued = []

    def on_response(response):
        target = response.request.headers.get("x-amz-target", "")
        if target.endswith(".InitiateAuth") and response.ok:
            issued.append(response.json()["AuthenticationResult"]["IdToken"])

    page.on("response", on_response)
    page.goto(host.base + "/")
    # Nobody yet: Cognito's refusal, in words.
    page.get_by_label("Email", exact=True).fill("kim@example.com")
    page.get_by_label("Password").fill("Plum-velvet-harbor-42")
    page.get_by_role("button", name="Sign in").click()
    status_says(page, "user name or password")
    page.get_by_role("button", name="New here? Create an account").click()
    page.get_by_label("Email", exact=True).fill("kim@example.com")
    # Long enough for the form, too weak for the pool's policy: Cognito's
    # refusal is shown in words.
    page.get_by_label("Password").fill("plumvelvetharbor")
    page.get_by_role("button", name="Create account").click()
    status_says(page, "password")
    page.get_by_label("Password").fill("Plum-velvet-harbor-42")
    page.get_by_role("button", name="Create account").click()
    status_says(page, "code")
    page.get_by_label("Code from the email").fill("123456")
    page.get_by_role("button", name="Confirm").click()
    # Signed in by Cognito: the API is called with the ID token it issued.
    deadline = time.time() + 20
    while not (issued and f"Bearer {issued[0]}" in sent) and time.time() < deadline:
        page.wait_for_timeout(100)
    assert issued and f"Bearer {issued[0]}" in sent, (issued, sent)
    # This host does not take moto's tokens, so what follows (refused API
    # calls and socket) is not the client's doing.
    page.close()
    person.problems.clear()  # the refused API calls and socket, expected here


def test_a_big_video_goes_up_in_parts(people, tmp_path):
    """Above 32 MiB the composer sends the file in presigned parts with one
    progress bar, completes the upload, and the post shows the video."""
    hal = people("hal")
    sign_up(hal, "hal")
    size = 40 * 1024 * 1024
    head = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41"
    body = size - len(head) - 8
    video = tmp_path / "trip.mp4"
    video.write_bytes(head + struct.pack(">I", body + 8) + b"mdat" + bytes(range(256)) * (body // 256) + b"\0" * (body % 256))
    parts = []
    hal.page.on("request", lambda r: "partNumber=" in r.url and parts.append(r.url))
    page = hal.page
    page.goto(hal.host.base + "/#/feed")
    page.get_by_label("New post").fill("A long walk, filmed")
    page.locator("#post-files").set_input_files(str(video))
    expect(page.locator(".attachment")).to_contain_text("Ready", timeout=120_000)
    assert len(parts) == 3, parts
    page.get_by_role("button", name="Post").click()
    status_says(page, "Posted")
    clip = page.locator("article.post", has_text="A long walk, filmed").locator("video")
    expect(clip).to_have_attribute("src", re.compile(r"/media/.*video\.mp4$"))
    request = urllib.request.Request(clip.get_attribute("src"), headers={"range": "bytes=0-7"})
    with urllib.request.urlopen(request) as r:
        assert r.status == 206 and r.read() == head[:8]
