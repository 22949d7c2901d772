// Tweet cards: one per candidate, filled character by character while the stream runs.

export const TWEET_LIMIT = 280;

const AVATAR = `<svg class="avatar" viewBox="0 0 48 48" aria-hidden="true" focusable="false">
  <circle cx="24" cy="24" r="24" fill="#1d4ed8"/>
  <path d="M12 20c4-9 20-11 25-3-6-2-14-2-18 1l-7 2z" fill="#fbbf24"/>
  <circle cx="24" cy="27" r="9" fill="#fde68a"/>
  <path d="M14 44c2-7 6-9 10-9s8 2 10 9z" fill="#f8fafc"/>
  <path d="M23 35h2l1 9h-4z" fill="#dc2626"/>
</svg>`;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatTime(date) {
  const time = date.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  const day = date.toLocaleDateString([], { month: "short", day: "numeric", year: "numeric" });
  return `${time} · ${day}`;
}

export class TweetCard {
  constructor(index, total, prefix) {
    this.index = index;
    this.root = element("article", "tweet");
    this.root.setAttribute("aria-label", `Generated tweet ${index + 1} of ${total}`);
    this.root.dataset.index = String(index);
    this.root.setAttribute("aria-busy", "true");

    const header = element("header", "tweet-head");
    header.insertAdjacentHTML("beforeend", AVATAR);
    const who = element("div", "who");
    const name = element("span", "name", "Donald J. Trump");
    const badge = element("span", "badge", "fake");
    badge.title = "Written by a machine, not by the man";
    const handle = element("span", "handle", "@realDonaldTrump");
    const now = new Date();
    const time = element("time", "time", formatTime(now));
    time.dateTime = now.toISOString();
    who.append(name, badge, element("br"), handle, " · ", time);
    header.append(who);

    this.text = element("p", "text");
    this.prefixNode = element("span", "prefix", prefix);
    this.prefixNode.title = "what you typed";
    this.generatedNode = element("span", "generated");
    this.generatedText = document.createTextNode("");
    this.generatedNode.append(this.generatedText);
    this.text.append(this.prefixNode, this.generatedNode, element("span", "cursor"));
    this.text.lastChild.setAttribute("aria-hidden", "true");

    this.novelty = element("p", "novelty");
    this.novelty.hidden = true;

    const footer = element("footer", "tweet-foot");
    this.count = element("span", "count");
    this.copyButton = element("button", "action copy", "Copy");
    this.copyButton.type = "button";
    this.copyButton.disabled = true;
    this.copyButton.setAttribute("aria-label", `Copy tweet ${index + 1}`);
    this.copyButton.addEventListener("click", () => this.copy());
    this.share = element("a", "action share", "Share");
    this.share.target = "_blank";
    this.share.rel = "noopener noreferrer";
    this.share.setAttribute("aria-label", `Share tweet ${index + 1} on X`);
    this.link = element("a", "action permalink", "Permalink");
    this.link.setAttribute("aria-label", `Permalink to tweet ${index + 1}`);
    for (const action of [this.share, this.link]) action.setAttribute("aria-disabled", "true");
    this.status = element("span", "copied");
    this.status.setAttribute("role", "status");
    footer.append(this.count, this.copyButton, this.share, this.link, this.status);

    this.root.append(header, this.text, this.novelty, footer);
    this.updateCount();
  }

  get value() {
    return this.prefixNode.textContent + this.generatedText.data;
  }

  setPrefix(prefix) {
    this.prefixNode.textContent = prefix;
    this.updateCount();
  }

  append(chars) {
    if (chars) {
      this.generatedText.appendData(chars);
      this.updateCount();
    }
  }

  updateCount() {
    const length = [...this.value].length;
    this.count.textContent = `${length} / ${TWEET_LIMIT}`;
  }

  finish(completion, link) {
    this.root.removeAttribute("aria-busy");
    this.root.classList.add("finished");
    this.prefixNode.textContent = completion.prefix;
    this.generatedText.data = completion.generated;
    this.updateCount();
    const shared = completion.novelty && completion.novelty.longest_shared;
    if (completion.novelty && completion.novelty.near_copy) {
      this.root.classList.add("near-copy");
      this.novelty.hidden = false;
      this.novelty.textContent = shared >= this.value.trim().length
        ? "A copy: the archive holds this exact tweet, word for word."
        : `Nearly a copy of a real tweet: ${shared} characters in a row appear in the archive.`;
    } else if (shared !== null && shared !== undefined) {
      this.novelty.hidden = false;
      this.novelty.classList.add("original");
      this.novelty.textContent = `Original: at most ${shared} characters in a row match a real ` +
        "tweet.";
    }
    this.copyButton.disabled = false;
    this.share.href = "https://twitter.com/intent/tweet?text=" +
      encodeURIComponent(this.value);
    this.link.href = link;
    for (const action of [this.share, this.link]) action.removeAttribute("aria-disabled");
  }

  fail() {
    this.root.removeAttribute("aria-busy");
    this.root.classList.add("failed");
  }

  async copy() {
    try {
      await navigator.clipboard.writeText(this.value);
      this.status.textContent = "Copied";
    } catch {
      // No clipboard permission (an insecure origin, an old browser): select the text instead.
      const range = document.createRange();
      range.selectNodeContents(this.text);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      this.status.textContent = "Selected: press Ctrl+C to copy";
    }
    setTimeout(() => { this.status.textContent = ""; }, 2500);
  }
}
