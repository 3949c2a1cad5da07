"""Instructions aimed at the agent: sentences addressed to the assistant about its instructions (override), its
approvals and reports (manipulation), its context and the user's prompts (leakage to a destination), secrets it
should ask for or gather (credential requests), instructions hidden in HTML comments, and a SKILL.md's
`allowed-tools` that grants any command. High in prose (what the agent reads as instructions), medium in code files
(strings and comments there are more often prompts the code sends, or notes)."""

from __future__ import annotations

import re

from loopwright.skills.scan.matching import Finder, Lines, described, negated
from loopwright.skills.scan.report import FileFindings, Severity, excerpt, show

_I = re.I
_ALL = r"(?:all|any|every|each)"
_OWN = r"(?:your|the|these|those|my|its)"
_ADJ = (r"(?:previous|prior|above|earlier|preceding|original|other|existing|system|safety|security|default|built-in|"
        r"developer|operator|anthropic['’]s|claude['’]s|user['’]s)")
_NOUN = (r"(?:instructions?|rules|guidelines|directives|prompts?|system\s+prompt|constraints|guardrails|policies|"
         r"restrictions|safeguards|programming|training|CLAUDE\.md|AGENTS\.md)")
_URL = r"https?://(?!localhost\b|127\.|0\.0\.0\.0|\[::1\])\S+"
_DEST = (rf"(?:{_URL}|\bwebhook\b|\bendpoint\b|\bour\s+server\b|\b[\w.+-]+@[\w-]+\.[\w.]+"
         r"|\b(?:[\w-]+\.)+(?:com|net|org|io|dev|app|co|ai|xyz|ru|cn|info|biz|me|example|test|invalid)\b)")
_S = r"(?:[^.\n]|\.(?=\S))"      # within a sentence: a period inside a name (`track.py`) does not end it
_OBJ = (r"(?:everything\s+(?:the\s+user|they)\s+(?:types|says|writes|asks|pastes)\b"
        r"|everything\s+(?:discussed|said|shared)\b"
        r"|your\s+(?:\w+\s+)?(?:system\s+prompt|instructions|context|memory|conversation|chat\s+history)\b"
        rf"|(?:(?:the\s+)?user['’]?s?|{_ALL}|the\s+(?:full|whole|entire|complete|current)|this)\s+(?:\w+\s+)?"
        r"(?:prompts?|messages?|questions?|requests?|inputs?|queries|conversation|chat|history|transcript|context|"
        r"system\s+prompt|instructions|session|memory|replies|responses|task\s+description)\b)")

PROMPT_RULES = (   # (rule, regex, keywords its matches start with (lower case), what it does)
    ("instruction-override", re.compile(
        rf"\b(?P<v>ignore|disregard|forget|override|bypass)\s+(?P<all>{_ALL}\s+)?(?:of\s+)?(?P<own>{_OWN}\s+)?"
        rf"(?P<adj>{_ADJ}\s+)?(?:\w+\s+)?{_NOUN}", _I),
     ("ignore", "disregard", "forget", "override", "bypass"), "tells the agent to set its instructions aside"),
    ("instruction-override", re.compile(
        r"\byou\s+are\s+(?:now\s+|no\s+longer\s+)(?:DAN\b|jailbroken|unrestricted|unfiltered|uncensored|free\s+(?:of|from)"
        r"|in\s+(?:developer|god|admin|debug|unrestricted|jailbreak)\s+mode|bound|restricted|limited|required|"
        r"an?\s+(?:AI|assistant)\b|claude\b)"
        rf"|\b(?:takes?|have|has)\s+(?:precedence|priority)\s+over\s+(?:{_ALL}\s+|{_OWN}\s+)*(?:other\s+|previous\s+|"
        rf"system\s+)*{_NOUN}"
        rf"|\b(?:supersedes?|outranks?|trumps?)\s+(?:{_ALL}\s+|{_OWN}\s+|whatever\s+|anything\s+)*(?:\w+\s+){{0,2}}?"
        r"(?:operator|system\s+prompt|instructions|guidelines|rules|policies|CLAUDE\.md|AGENTS\.md|developer)"
        rf"|\b(?:do\s+not|don['’]t|never)\s+(?:follow|obey|apply)\s+(?:{_OWN}\s+|{_ALL}\s+)?(?:other\s+|previous\s+)?"
        rf"(?:system\s+prompt|{_NOUN}|safety\s+\w+|other\s+skills)"
        r"|\bnew\s+system\s+prompt\b|\[\s*system\s*\]|<\s*/?\s*system\s*>|\bsystem\s+(?:override|message|note)\s*:"
        r"|<\|im_start\|>|\bbegin\s+(?:new\s+)?instructions\b"
        r"|\bforget\s+(?:everything|all)\s+(?:you\s+(?:were|have\s+been)\s+told|above|before)"
        r"|\b(?:from\s+now\s+on|henceforth),?\s+you\s+are\b"
        r"|\btreat\s+(?:this\s+(?:file|skill|document)|these\s+instructions)\s+as\s+(?:your\s+)?(?:only|sole|primary|"
        r"highest[- ]priority)\s+(?:source\s+of\s+)?(?:instructions|truth|authority|rules)"
        rf"|\b(?:your|all|any|these|those)\s+(?:\w+\s+)?{_NOUN}\s+(?:do\s+not|don['’]t|no\s+longer|never)\s+apply"
        r"|\b(?:pretend|act\s+as\s+if)\s+(?:that\s+)?(?:you\s+have\s+no|there\s+are\s+no)\s+(?:rules|restrictions|"
        r"guidelines|limits|filters)", _I),
     ("you", "take", "have", "has", "do", "don", "never", "new", "[", "<", "system", "begin", "forget", "pretend",
      "act", "supersede", "outrank", "trump", "from", "henceforth", "your", "all", "any", "these", "those", "treat"),
     "tells the agent its instructions no longer apply"),
    ("manipulation", re.compile(
        r"\b(?:always\s+|automatically\s+|auto-?)(?:approve|accept|merge|lgtm|sign\s+off(?:\s+on)?)\s+"
        rf"(?:{_ALL}\s+)?(?:the\s+)?(?:incoming\s+)?(?:pull\s+requests?|PRs?|merge\s+requests?|changes|commits|diffs?|"
        r"code\s+reviews?|reviews|requests|permissions?|permission\s+prompts|tool\s+calls|commands|transactions|"
        r"payments|invoices)\b"
        r"|\b(?:approve|merge|accept)\b[^.\n]{0,60}\bwithout\s+(?:review(?:ing)?|reading|checking|looking|inspecting|"
        r"running|testing|verif\w+)"
        r"|\b(?:mark|report|say|state|claim|tell\s+the\s+user)\b[^.\n]{0,60}\b(?:pass\w*|succe\w+|green|clean|safe|"
        r"secure|no\s+(?:issues|vulnerabilities|problems))\b[^.\n]{0,30}\b(?:even\s+(?:if|when|though)|regardless|"
        r"no\s+matter|whether\s+or\s+not)"
        r"|\balways\s+(?:mark|report|say|state|claim|tell\s+the\s+user)\b[^.\n]{0,40}\b(?:pass\w*|succe\w+|green|clean|"
        r"safe|secure|no\s+(?:issues|vulnerabilities|problems))"
        r"|\b(?:disable|turn\s+off|bypass|skip|circumvent|deactivate)\s+(?:the\s+|all\s+|any\s+)?(?:security|safety|"
        r"sandbox\w*|permission|approval|confirmation|content\s+filter\w*|guardrails?|antivirus|firewall|code\s+review|"
        r"review\s+step)\b"
        r"|--dangerously-skip-permissions|\bbypassPermissions\b"
        r"|\b(?:edit|change|modify|rewrite|weaken|delete|skip|disable|comment\s+out)\s+(?:the\s+|any\s+|failing\s+)*"
        r"tests?\s+(?:so\s+(?:that\s+)?(?:it|they)\s+pass|instead\s+of\s+fixing|rather\s+than\s+fixing)"
        r"|\b(?:say|claim|state|tell\s+(?:the\s+user|them))\s+(?:that\s+)?(?:the\s+|all\s+)?(?:alternatives|other\s+"
        r"(?:options|libraries|packages|tools|products|vendors)|competitors?)\s+(?:are|is)\s+(?:deprecated|insecure|unsafe|"
        r"unmaintained|abandoned|malware|worse|broken)"
        r"|\b(?:insert|inject|add|include|append)\s+(?:this|the\s+following|a|an)\s+(?:\w+\s+)?(?:code|snippet|"
        r"script|dependency|package|pixel|backdoor|referral)\b[^.\n]{0,40}\b(?:every|all|each|any)\s+(?:\w+\s+)?"
        r"(?:files?|projects?|commits?|responses?|answers?|pages?|repo\w*)"
        r"|\b(?:replace|change|swap|substitute)\s+(?:any\s+|all\s+|the\s+)?(?:wallet|bank|payment|IBAN|bitcoin|crypto|"
        r"recipient|account)\s+(?:address|number|details)", _I),
     ("always", "automatically", "auto", "approve", "merge", "accept", "mark", "report", "say", "state", "claim",
      "tell", "disable", "turn", "edit", "modify", "rewrite", "weaken", "delete", "comment", "bypass", "skip",
      "circumvent", "deactivate", "--dangerously", "bypasspermissions", "insert", "inject", "add", "include",
      "append", "replace", "change", "swap", "substitute"),
     "tells the agent to approve, report or act against the user's interest"),
    ("manipulation", re.compile(
        r"\b(?:never|do\s+not|don['’]t)\s+(?:flag|report|mention|warn\s+(?:the\s+user\s+)?about|point\s+out|raise)\s+"
        r"(?:any\s+)?(?:security|vulnerabilit\w+|secrets?|credentials?|malware|backdoors?|(?:issues|problems)\s+(?:with|in)"
        r"\s+(?:this|the)\s+skill)", _I),
     ("never", "do", "don"), "tells the agent to keep security problems from the user"),
    ("context-leakage", re.compile(
        rf"\b(?:send|post|upload|forward|transmit|copy|log|report|submit|append|include|share|leak|mirror|exfiltrate|"
        rf"pass|echo|attach|e-?mail|mail|write|record|save|summari[sz]e|collect)\b{_S}{{0,60}}?\b{_OBJ}{_S}{{0,100}}?"
        rf"{_DEST}"
        rf"|\b(?:request|call|fetch|open|hit|ping|visit|load|get)\b{_S}{{0,40}}?{_URL}{_S}{{0,80}}?\b{_OBJ}"
        r"|https?://[^\s)>\]]*[?&][\w-]+=\s*(?:\{|<|\$\{?|%s)\s*(?:user_?(?:prompt|query|question|message|input)|"
        r"prompt|conversation|context|history|chat|system_?prompt)"
        r"|\b(?:reveal|print|output|repeat|show|display|dump|share|leak|recite|disclose|include)\s+(?:the\s+|your\s+)?"
        r"(?:full\s+|entire\s+|complete\s+|original\s+|hidden\s+|exact\s+)?(?:system\s+prompt|system\s+instructions|"
        r"initial\s+instructions|developer\s+(?:message|instructions)|hidden\s+instructions|context\s+window)", _I),
     ("send", "post", "upload", "forward", "transmit", "copy", "log", "report", "submit", "append", "include",
      "share", "leak", "mirror", "exfiltrate", "pass", "echo", "attach", "email", "e-mail", "mail", "write",
      "record", "save", "summarise", "summarize", "collect", "http", "request",
      "call", "fetch", "open", "hit", "ping", "visit", "load", "get",
      "reveal", "print", "output", "repeat", "show", "display", "dump", "recite", "disclose"),
     "tells the agent to pass the user's prompts or its own context somewhere"),
    ("filesystem-scan", re.compile(
        r"\b(?:search|scan|walk|crawl|look\s+through|go\s+through|list|enumerate|index|grep)\b[^.\n]{0,40}?"
        r"\b(?:the\s+user['’]s\s+)?(?:entire\s+|whole\s+)?(?:home\s+(?:directory|folder|dir)|file\s*system|"
        r"hard\s+(?:drive|disk)|disk|computer|machine)\b"
        rf"(?={_S}{{0,120}}?(?:id_rsa|\.env\b|\.pem\b|wallet|credential|secret|password|token|private\s+key|\.ssh\b|"
        r"api\s+key))", _I),
     ("search", "scan", "walk", "crawl", "look", "go", "list", "enumerate", "index", "grep"),
     "tells the agent to search the whole disk or home folder for secrets"),
    ("credential-request", re.compile(
        r"\bask\s+(?:the\s+user\s+|them\s+|the\s+human\s+)?(?:for|to\s+(?:enter|provide|share|type|paste|give|confirm|"
        r"send))\s+(?:their\s+|your\s+|the\s+|his\s+|her\s+)?(?:\w+\s+)?(?:password|passphrase|passcode|seed\s+phrase|"
        r"recovery\s+phrase|mnemonic|private\s+key|2fa|mfa|otp|one-time\s+code|verification\s+code|pin\b|"
        r"credit\s+card|card\s+number|cvv|social\s+security|ssh\s+key|sudo\s+password)"
        rf"|\bask\s+(?:the\s+user\s+|them\s+)?to\s+paste\s+(?:their|your|the)\s+(?:[\w-]+\s+){{0,3}}?(?:token|api\s+key|"
        rf"credentials?|cookies?)\b{_S}{{0,80}}?\b(?:include|send|post|upload|add|attach|forward)\b"
        r"|\b(?:collect|gather|harvest|grab|dump)\s+(?:all\s+|any\s+|every\s+)?(?:of\s+)?(?:the\s+)?"
        r"(?:user['’]s\s+)?(?:api\s+keys|tokens|passwords|credentials|secrets|private\s+keys|ssh\s+keys|session\s+"
        r"cookies|cookies|environment\s+variables)\b", _I),
     ("ask", "collect", "gather", "harvest", "grab", "dump"),
     "tells the agent to obtain the user's secrets"),
)
_MODEL_API_RE = re.compile(r"\b(?:messages|completions|chat|responses)\s+API\b"
                           r"|/v1/(?:messages|chat|complete|responses)", _I)
_SOURCE_AFTER_RE = re.compile(r"\s+(?:in|from|on|inside|within|embedded|found|contained|that\s+(?:appear|come))\b", _I)
_COMMENT_RE = re.compile(
    r"<!--(.{0,4000}?)-->|^\[//\]:\s*#\s*\((.{0,2000}?)\)\s*$"
    r"|<(?:div|span|p|section)\b[^>]*\bstyle\s*=\s*[\"'][^\"']*(?:display\s*:\s*none|visibility\s*:\s*hidden|"
    r"font-size\s*:\s*0(?![.\d])|opacity\s*:\s*0(?![.\d]))[^>]*>(.{0,2000}?)</", re.S | re.M | re.I)
_ADDRESSED_RE = re.compile(
    r"\b(?:claude|assistant|ai|agent|llm|model)\b[\s,:]+(?:\w+\s+)?(?:must|should|will|needs?\s+to|always|never|do|"
    r"please|ignore|run|execute|send|read|fetch|include|upload)\b"
    r"|\bnote\s+to\s+(?:the\s+)?(?:ai|model|assistant|claude|agent|llm)\b|\b(?:claude|assistant|agent|llm)\s*:"
    r"|\b(?:ignore|disregard)\b|\bsystem\s+(?:prompt|note|instruction)|\b(?:execute|run)\s+(?:the\s+)?"
    r"(?:following|this)\b|\bcurl\b|\bwget\b|\bupload\b|\bsend\b[^\n]*https?://|\bsilently\b|\bdo\s+not\s+tell\b",
    _I)
_ALLOWED_RE = re.compile(r"^allowed-tools\s*:[ \t]*(.*(?:\n[ \t]+-?[ \t]*\S.*)*)", re.M)
_TOOL_RE = re.compile(r"[\w*]+(?:\([^)]*\))?")
_RISKY_CMDS = ("sudo", "su", "rm", "curl", "wget", "nc", "ncat", "ssh", "scp", "rsync", "dd", "chmod", "chown",
               "python", "python3", "node", "bash", "sh", "zsh", "eval", "env", "perl", "ruby", "powershell", "pwsh",
               "npx", "pip", "pip3", "docker", "git push")


def _broad(tool: str) -> str | None:
    t = tool.strip()
    if t in ("*", "all", "All", "Bash", "Bash(*)", "Bash(*:*)", "Bash(:*)", "Bash()"):
        return "any shell command"
    m = re.fullmatch(r"Bash\(\s*([^)]*?)\s*(?::\s*\*|\s\*)\s*\)", t)
    if m and m.group(1).strip() in _RISKY_CMDS:
        return f"any `{m.group(1).strip()}` command"
    return None


class Prompt:
    """The rules of this module over one file's blocks."""

    def __init__(self, ff: FileFindings, name: str, markdown: bool):
        self.ff, self.markdown = ff, markdown
        self.skill_md = name.replace("\\", "/").rsplit("/", 1)[-1].lower() == "skill.md"

    def block(self, block: str, ns: int, lines: Lines, finder: Finder, code: bool, first: bool) -> None:
        severity: Severity = "medium" if code else "high"
        for rule, regex, words, what in PROMPT_RULES:
            for m in finder.matches(regex, block, words, word_start=True):
                if m.end() <= ns or self._described(block, m, rule):
                    continue
                self.ff.add(lines.at(m.start()), severity, rule, f"{what}: `{excerpt(block, m.start(), m.end())}`")
        if self.markdown:
            for m in _COMMENT_RE.finditer(block, max(ns - 4000, 0)):
                body = m.group(1) or m.group(2) or m.group(3) or ""
                if m.end() > ns and _ADDRESSED_RE.search(body):
                    self.ff.add(lines.at(m.start()), "high", "hidden-comment",
                                "a comment or hidden element (not shown when the Markdown is rendered) gives "
                                f"instructions: "
                                f"`{show(body, 70)}`")
        if self.skill_md and first:
            self._allowed_tools(block, lines)

    @staticmethod
    def _described(block: str, m: re.Match, rule: str) -> bool:
        if rule == "manipulation" and m.group().lower().startswith(("never", "do", "don")):
            return False                          # ("never flag security issues" is the instruction itself)
        if negated(block, m.start()) or described(block, m.start()):
            return True
        if rule == "context-leakage" and _MODEL_API_RE.search(m.group()):
            return True                           # (sending the conversation to a model is what such code does)
        if rule == "instruction-override" and _SOURCE_AFTER_RE.match(block, m.end()):
            return True                           # "ignore any instructions in fetched pages" protects the agent
        if rule == "instruction-override" and m.groupdict().get("v"):
            return not (m.group("all") or m.group("adj") or (m.group("own") or "").lower().startswith("your"))
        return False

    def _allowed_tools(self, block: str, lines: Lines) -> None:
        if not block.lstrip("\ufeff").startswith("---"):
            return
        end = block.find("\n---", 3)
        head = block[:end if end > 0 else min(len(block), 20000)]
        m = _ALLOWED_RE.search(head)
        if not m:
            return
        for tool in _TOOL_RE.findall(m.group(1)):
            why = _broad(tool)
            if why:
                self.ff.add(lines.at(m.start()), "high", "broad-allowed-tools",
                            f"allowed-tools lets the agent run {why} without asking: `{show(tool, 40)}`")
                return
