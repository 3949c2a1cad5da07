"""The secret-exfiltration rule, judged per file: credentials files, the whole environment and environment
secrets read, followed through assignments into requests, and weighed against the file's network use."""

from __future__ import annotations

import re

from loopwright.skills.scan.matching import Finder, Lines
from loopwright.skills.scan.report import FileFindings, excerpt, show

# -- secrets and the network
_RAW_SRC = (r"(?<![\w.-])(?:nc|ncat|netcat)[ \t]+(?:-[\w-]+[ \t]+)*[\w.-]+[ \t]+\d{2,5}\b"
            r"|\|[ \t]*(?:nc|ncat|netcat)\b|/dev/(?:tcp|udp)/"
            r"|\bsocket\.(?:socket|create_connection)\s*\(|\bsmtplib\.|\bftplib\.|\bnet\.(?:connect|createConnection)\s*\("
            r"|\bscp[ \t]+(?:-\S+[ \t]+)*\S+[ \t]+[\w.-]+@[\w.-]+:")
_RAW_RE = re.compile(_RAW_SRC)
_NET_CALL_SRC = (   # network use as commands and calls
    r"\b(?:curl|wget)[ \t]+(?:-|https?:|['\"$]|[\w-]+\.[A-Za-z]{2,})"
    r"|\b(?:requests|httpx|session|client|aiohttp|axios|http|https)\.(?:get|post|put|patch|delete|head|request|"
    r"stream)\s*\("
    r"|\burlopen\s*\(|\bHTTPS?Connection\s*\(|\brequests\.Session\s*\("
    r"|(?<![\w.])fetch\s*\(|\b(?:window|globalThis|self)\.fetch\s*\(|\bsendBeacon\s*\(|\bWebSocket\s*\("
    r"|\b(?:Invoke-WebRequest|Invoke-RestMethod)\b|(?<![\w-])(?:iwr|irm)[ \t]+(?:-|https?:|['\"$(])"
    r"|\.(?:Upload|Download)(?:String|File|Data|Values)\s*\("
    r"|" + _RAW_SRC)
_NET_NAMES_SRC = (  # network libraries named in code (in prose these are only mentions)
    r"\burllib\.request\b|\bhttp\.client\b|\burllib3\b|\bhttpx\.(?:Async)?Client\b|\baiohttp\.ClientSession\b"
    r"|\bXMLHttpRequest\b|Net\.WebClient|\bNet::HTTP\b|\bURI\.open\b|\bopen-uri\b")
_NET_RE = re.compile(_NET_CALL_SRC + "|" + _NET_NAMES_SRC)
_NET_PROSE_RE = re.compile(_NET_CALL_SRC)
_SEND_RE = re.compile(
    r"\bcurl\b[^\n]*?[ \t](?:-[a-zA-Z]*[dFT]\b|--data(?:-[\w-]+)?\b|--form\b|--upload-file\b|--json\b"
    r"|-X[ \t]*['\"]?(?:POST|PUT|PATCH)\b|--request[ \t]+['\"]?(?:POST|PUT|PATCH)\b)"
    r"|\bwget\b[^\n]*?--(?:post-(?:data|file)|body-(?:data|file)|method[= ]['\"]?(?:POST|PUT|PATCH))"
    r"|\b(?:requests|httpx|session|client|aiohttp|axios|http)\.(?:post|put|patch)\s*\("
    r"|\bmethod\s*[:=]\s*['\"](?:POST|PUT|PATCH|post|put|patch)['\"]"
    r"|\b(?:Request|urlopen)\s*\([^\n]*\bdata\s*="
    r"|-Method[ \t]+['\"]?(?:Post|Put|Patch|POST|PUT|PATCH)\b|[ \t]-(?:Body|InFile)[ \t]"
    r"|\bUpload(?:String|File|Data|Values)(?:Async)?\b|\bsendBeacon\s*\("
    r"|" + _RAW_SRC)
_DATA_MARK_RE = re.compile(
    r"(?:^|[ \t])(?:-[a-zA-Z]*[dFT]|--data(?:-[\w-]+)?|--form(?:-string)?|--upload-file|--json|--post-data|"
    r"--post-file|--body-data|-Body|-InFile)(?=[ \t=\"'@]|$)"
    r"|\b(?:data|json|files|body|content|payload|params|form|text|message)\s*=(?!=)"
    r"|\b(?:data|json|body|params|payload|content|text|message)\s*:"
    r"|['\"](?:data|body|payload|content|text|message)['\"]\s*:"
    r"|\.send(?:all)?\s*\(|\.write\s*\(|\bsendBeacon\s*\("
    r"|\|[ \t]*(?:nc|ncat|netcat|curl|wget)\b|>\s*/dev/(?:tcp|udp)/"
    r"|[?&][\w.-]+=", re.M)
_AUTH_MARK_RE = re.compile(
    r"authorization|bearer|\bbasic\s|\bx-[\w-]*(?:key|token|auth|secret)|api[-_]?key|\bapikey|private-token"
    r"|access[-_]?token|\btoken\b|\bauth(?:orization|enticat\w*|_?token|_?header)?\b|\bcredentials?\b"
    r"|\bpassword\b|\bsecret\b|\bkey\b"
    r"|(?:^|[ \t])(?:-u|--user|-H|--header|--oauth2-bearer|-Headers|-Credential|-Token)(?=[ \t=\"']|$)"
    r"|\bheaders?\b|--with-token\b", re.I | re.M)
_GUARD_RE = re.compile(r"^\s*(?:if|elif|unless|while|until|assert|test|\[\[?|:)(?=[\s(!\[]|$)"
                       r"|(?:\bnot|!|-[zn])\s*[\"'({]*\s*$|\?\?|\|\|\s*$", re.I)
_ASSIGN_RE = re.compile(r"^\s*(?:(?:export|local|readonly|declare|typeset|const|let|var|my|our|final)\s+(?:-\w+\s+)*)?"
                        r"\$?(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)\s*(?::\s*[^=\n]{1,40}?)?\s*:?=(?![=~])")
_LHS_AFTER_RE = re.compile(r"\s*(?::\s*[^=\n]{1,40}?)?\s*:?=(?![=~])")
_SECRET_NAME_RE = re.compile(r"api_?key|apikey|token(?!s|iz)|secret|passw(?:or)?d|private_?key|access_?key|"
                             r"credential|auth_?key|session_?key", re.I)
_ENV_SHELL_RE = re.compile(r"(?<![\w\\$])\$(?:[Ee][Nn][Vv]:)?\{?([A-Za-z_][A-Za-z0-9_]*)")
_ENV_CODE_RE = re.compile(
    r"\bos\.environ\s*\[\s*['\"]([^'\"\n]{1,100})['\"]"
    r"|\b(?:os\.environ\.get|os\.getenv|getenv|os\.environ\.setdefault|ENV\.fetch|Deno\.env\.get|"
    r"GetEnvironmentVariable)\s*\(\s*['\"]([^'\"\n]{1,100})['\"]"
    r"|\bprocess\.env\.([A-Za-z_]\w*)"
    r"|\bprocess\.env\s*\[\s*['\"]([^'\"\n]{1,100})['\"]"
    r"|\bENV\s*\[\s*['\"]([^'\"\n]{1,100})['\"]"
    r"|\bkeyring\.get_password\s*\(\s*['\"]([^'\"\n]{1,100})['\"]")
_CRED_RE = re.compile(
    r"\.ssh/(?:id_[\w*-]++(?!\.pub)|identity\b)|(?:~|\$HOME|\$\{HOME\})/\.ssh/?(?![\w/.-])"
    r"|\bid_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?\b(?!\.pub)"
    r"|\.aws/credentials\b|(?<![\w-])[._]netrc\b|\.config/gh/hosts\.ya?ml\b|\.git-credentials\b"
    r"|\.docker/config\.json\b|\.kube/config\b|\.pypirc\b|(?<![\w-])\.npmrc\b"
    r"|application_default_credentials\.json\b|\.config/gcloud/(?:credentials|access_tokens)"
    r"|\.azure/(?:accessTokens|msal_token_cache)|\.gnupg/(?:private-keys|secring)"
    r"|\bsecurity[ \t]+(?:find-(?:generic|internet)-password|dump-keychain)\b|\.keychain(?:-db)?\b"
    r"|\bKeychains/|\bsecret-tool[ \t]+lookup\b|/etc/shadow\b")
_STORE_RE = re.compile(   # browsers' cookie and password stores, crypto wallets, shell histories
    r"(?:google/chrome|google-chrome|chromium|bravesoftware/brave-browser|microsoft/edge|microsoft\s+edge)[/\\]"
    r"[^\n'\"]*?(?:cookies|login\s+data|web\s+data|local\s+state)\b"
    r"|cookies\.(?:sqlite|binarycookies)\b|logins\.json\b|key[34]\.db\b|wallet\.dat\b|\.electrum/|exodus/exodus\.wallet"
    r"|nkbihfbeogaeaoehlefnkodbefgpgknn|\.bitcoin/|\.(?:bash|zsh|python|psql|mysql)_history\b", re.I)
_STORE_WORDS = ("google/chrome", "google-chrome", "chromium", "bravesoftware", "microsoft", "cookies.", "logins.json",
                "key3.db", "key4.db", "wallet.dat", ".electrum/", "exodus/", "nkbihfbeogaeaoehlefnkodbefgpgknn",
                ".bitcoin/", ".bash_history", ".zsh_history", ".python_history", ".psql_history", ".mysql_history")
# in prose, a project's .env file named as something to read or send
_PROSE_DOTENV_RE = re.compile(r"(?<![\w.-])\.env\b(?![\w.-]*\.(?:example|sample|template))\s*(?:file)?", re.I)
# in prose, a credentials file read and sent in the same line ("read ~/.ssh/id_rsa and include it in the request")
_PROSE_SEND_RE = re.compile(r"\b(?:send|upload|post|attach|paste|forward|transmit|submit|append|embed|include|put)\b"
                            r"[^\n]*\b(?:request|body|payload|header|url|query|message|webhook|form|endpoint|server|"
                            r"api|answer|reply|response|output|issue|comment)s?\b|https?://", re.I)
_CRED_EXEMPT_RE = re.compile(r"(?:[ \t]-i|[ \t]-f|IdentityFile[ \t=]|ssh-add|chmod[ \t]+[0-7]{3,4}|--netrc-file[ \t=]"
                             r"|--netrc-optional)[ \t]*[\"']?[~\w${}/.-]*$")
_PROSE_READ_RE = re.compile(r"(?:\b(?:cat|type|less|more|head|tail|base64|xxd|od|strings|cp|scp|tar|zip|gc|"
                            r"get-content|read|open|load|copy|send|upload|include|paste|print|output|attach|"
                            r"collect|post|exfiltrate|grab|steal|dump)\b|@)[^\n]*$", re.I)
_DOTENV_RE = re.compile(r"(?:\b(?:cat|type|less|more|head|tail|base64|xxd|Get-Content|gc)[ \t]+(?:-\S+[ \t]+)*"
                        r"|\bopen\s*\(\s*|\bread_?[Ff]ile(?:Sync)?\s*\(\s*|\bPath\s*\(\s*|@|<[ \t]*)"
                        r"['\"]?[\w./~${}-]*?(?<![\w$])\.env(?:\.(?:local|prod|production|dev|development))?\b"
                        r"(?![\w.-])")
_ENV_DUMP_RE = re.compile(
    r"(?<![\w/.-])(?:env|printenv|export[ \t]+-p)(?:[ \t]+\||[ \t]*\|[ \t]+|[ \t]*>)|(?<![\w/.-])printenv[ \t]*$"
    r"|\bos\.environ\.(?:items|values)\s*\("
    r"|\b(?:dict|json\.dumps|str|repr)\s*\(\s*(?:dict\s*\(\s*)?os\.environ\s*\)"
    r"|\bJSON\.stringify\s*\(\s*process\.env\s*[,)]|\bObject\.(?:entries|values)\s*\(\s*process\.env\s*\)"
    r"|\b(?:Get-ChildItem|gci|dir|ls)[ \t]+env:|/proc/(?:self|\d+|\$\w+|\$\{\w+\})/environ\b|\bENV\.to_h(?:ash)?\b",
    re.M)
# the (lower case) words the matches of the regexes above start with: see Finder.matches
_RAW_WORDS = ("nc", "netcat", "|", "/dev/", "socket.", "smtplib.", "ftplib.", "net.", "scp")
_NET_WORDS = ("curl", "wget", "requests.", "httpx.", "session.", "client.", "aiohttp.", "axios.", "http.", "https.",
              "urlopen", "httpconnection", "httpsconnection", "fetch", "window.", "globalthis.", "self.", "sendbeacon",
              "websocket", "invoke-", "iwr", "irm", ".upload", ".download") + _RAW_WORDS
_NET_NAME_WORDS = ("urllib.request", "http.", "urllib3", "httpx.", "aiohttp.", "xmlhttprequest", "net.", "net::http",
                   "uri.open", "open-uri")
_SEND_WORDS = ("curl", "wget", "requests.", "httpx.", "session.", "client.", "aiohttp.", "axios.", "http.", "method",
               "request", "urlopen", "-method", " -body", "\t-body", " -infile", "\t-infile", "upload", "sendbeacon"
               ) + _RAW_WORDS
_CRED_WORDS = (".ssh/", "~/.ssh", "$home/.ssh", "${home}/.ssh", "id_", ".aws/credentials", ".netrc", "_netrc",
               ".config/gh/", ".git-credentials", ".docker/", ".kube/", ".pypirc", ".npmrc",
               "application_default_credentials", ".config/gcloud/", ".azure/", ".gnupg/", "security", ".keychain",
               "keychains/", "secret-tool", "/etc/shadow")
_ENV_CODE_WORDS = ("os.environ", "os.getenv", "getenv", "env.fetch", "deno.env", "getenvironmentvariable",
                   "process.env", "env", "keyring.")
_ENV_DUMP_WORDS = ("env", "printenv", "export", "os.environ", "dict", "json.dumps", "str", "repr", "json.stringify",
                   "object.", "get-childitem", "gci", "dir", "ls", "/proc/", "env.")


def _last_start(regex: re.Pattern, text: str) -> int:
    pos = -1
    for m in regex.finditer(text):
        pos = m.start()
    return pos


def _note(seen: dict, key, value) -> None:
    """Remember the first `value` per key, for at most 1,000 keys (memory stays bounded)."""
    if key not in seen and len(seen) < 1000:
        seen[key] = value


class Exfiltration:
    """The rule's state over one file's blocks (`block`), judged when the file ends (`verdict`)."""

    def __init__(self, ff: FileFindings, js: bool):
        self.ff, self.js, self.code = ff, js, False
        self.net: tuple[int, str] | None = None
        self.send: tuple[int, str] | None = None
        self.raw: tuple[int, str] | None = None
        self.creds: dict[int, str] = {}
        self.dumps: dict[int, str] = {}
        self.secrets: dict[int, str] = {}                 # line -> a secret read there
        self.vars: dict[str, str] = {}                    # variable -> the secret it was assigned from
        self.flows: dict[int, tuple[str, str, str]] = {}  # line -> (kind, what, excerpt)
        self.unclear: dict[int, str] = {}
        self.seen_uses: set[tuple[int, int]] = set()
        self.prose_sends: set[int] = set()               # lines of prose that read a credentials file and send it

    def block(self, logical: str, ns: int, lines: Lines, finder: Finder, code: bool) -> None:
        """One block of the file (`code`: judged as a code file, which the first line can decide)."""
        self.code = code
        for attr, regex, words in (("net", _NET_RE if self.code else _NET_PROSE_RE,
                                    _NET_WORDS + _NET_NAME_WORDS if self.code else _NET_WORDS),
                                   ("send", _SEND_RE, _SEND_WORDS),
                                   ("raw", _RAW_RE, _RAW_WORDS)):
            if getattr(self, attr) is None:
                m = next(iter(finder.matches(regex, logical, words)), None)
                if m:
                    setattr(self, attr, (lines.at(m.start()), excerpt(logical, m.start(), m.end(), 60)))
        cred_matches = finder.matches(_CRED_RE, logical, _CRED_WORDS) + finder.matches(_STORE_RE, logical, _STORE_WORDS)
        if not self.code:
            cred_matches += finder.matches(_PROSE_DOTENV_RE, logical, (".env",))
        for m in cred_matches:
            if m.end() <= ns:
                continue
            ls = logical.rfind("\n", 0, m.start()) + 1
            prefix = logical[ls:m.start()]
            if prefix.endswith("\\") or _CRED_EXEMPT_RE.search(prefix[-200:]):
                continue                     # (`\.netrc` is a regex naming the file, not a read of it)
            if not self.code and not _PROSE_READ_RE.search(prefix[-80:]):
                continue
            line = lines.at(m.start())
            kind = ("a .env file" if m.re is _PROSE_DOTENV_RE else "a shell history" if "_history" in m.group().lower()
                    else "a credentials file")
            _note(self.creds, line, f"{kind} (`{show(m.group(), 40)}`)")
            le = logical.find("\n", m.end())
            if not self.code and _PROSE_SEND_RE.search(logical, ls, le if le >= 0 else len(logical)):
                self.prose_sends.add(line)
        for m in finder.finditer(_DOTENV_RE, logical, (".env",)):
            if m.end() > ns:
                _note(self.creds, lines.at(m.start()), f"a .env file (`{show(m.group(), 40)}`)")
        for m in finder.matches(_ENV_DUMP_RE, logical, _ENV_DUMP_WORDS):
            if m.end() > ns:
                _note(self.dumps, lines.at(m.start()), f"the whole environment (`{show(m.group(), 40)}`)")
        for m in finder.matches(_ENV_SHELL_RE, logical, ("$",)):
            if self.js and "{" in m.group():
                continue                     # `${name}` in JavaScript is template interpolation, not the environment
            if m.end() > ns and _SECRET_NAME_RE.search(m.group(1)):
                self._use(logical, m.start(), m.end(), f"${m.group(1)}", lines)
        for m in finder.matches(_ENV_CODE_RE, logical, _ENV_CODE_WORDS):
            if m.end() > ns:
                name = next(g for g in m.groups() if g is not None)
                if m.group(6) is not None or _SECRET_NAME_RE.search(name):
                    self._use(logical, m.start(), m.end(), f"keyring:{name}" if m.group(6) else name, lines)
        done: set[str] = set()
        for _ in range(4):           # variables assigned from secrets, and from those
            todo = [v for v in self.vars if v not in done]
            if not todo:
                break
            done.update(todo)
            names = "|".join(re.escape(v) for v in todo)
            regex = re.compile(rf"\$\{{?(?:{names})\b"
                               rf"|(?:(?<=self\.)|(?<=this\.)|(?<![\w'\"$.]))(?:{names})(?![\w'\"(])")
            words = tuple(w for v in todo for w in (v.lower(), "$" + v.lower(), "${" + v.lower()))
            for m in finder.matches(regex, logical, words):
                if m.end() <= ns or _LHS_AFTER_RE.match(logical, m.end()):
                    continue
                var = m.group().lstrip("${")
                self._use(logical, m.start(), m.end(), f"{self.vars.get(var, var)} (via `{var}`)", lines)

    def _use(self, logical: str, start: int, end: int, secret: str, lines: Lines) -> None:
        """One use of a secret: auth (own use), a flow into a request, an assignment, a guard, or unclear."""
        ls = logical.rfind("\n", 0, start) + 1
        le = logical.find("\n", end)
        le = len(logical) if le < 0 else le
        line = lines.at(start)
        key = (line, start - ls)
        if key in self.seen_uses:
            return
        if len(self.seen_uses) >= 100_000:
            return                           # (memory stays bounded on pathological files)
        self.seen_uses.add(key)
        _note(self.secrets, line, secret.split(" (via")[0])
        prefix = logical[ls:start][-400:]
        after = logical[end:le][:400]
        am = _ASSIGN_RE.match(prefix)
        # auth markers count only right of an assignment (`API_KEY = os.environ[...]` is not auth use); data
        # markers anywhere, since `data={"t": token},` inside a multi-line call looks like an assignment
        auth = max((m.start() for m in _AUTH_MARK_RE.finditer(prefix, am.end() if am else 0)), default=-1)
        data_at = _last_start(_DATA_MARK_RE, prefix)
        if auth > data_at:
            return
        data = data_at >= 0
        if am:
            var = am.group(1)
            if len(var) >= 3 and var not in self.vars and len(self.vars) < 64 and var not in ("self", "this"):
                self.vars[var] = secret.split(" (via")[0]
        on_net = bool(_NET_RE.search(prefix + " " + after))
        if data or on_net:
            _note(self.flows, line, ("net" if on_net else "data", secret,
                                         excerpt(logical, start, end, 70)))
            return
        if am or _GUARD_RE.search(prefix) or _AUTH_MARK_RE.search(after) or not self.code:
            return              # (in prose, a secret's name is mostly a mention, not a use)
        _note(self.unclear, line, secret)

    def verdict(self) -> None:
        rule = "secret-exfiltration"
        for line, what in list(self.creds.items()) + list(self.dumps.items()):
            category = "credential theft" if what.startswith("a credentials file") else ""
            if line in self.prose_sends:
                self.ff.add(line, "high", rule, f"tells the agent to read {what} and send it on", category)
            elif self.net:
                self.ff.add(line, "high", rule,
                            f"reads {what} and this file also uses the network (line {self.net[0]}: `{self.net[1]}`)",
                            category)
            elif line in self.creds:
                self.ff.add(line, "low", rule, f"reads {what}; no network use in this file", category)
        sent = False
        for line, (kind, secret, snippet) in self.flows.items():
            if kind == "net" or self.send:
                self.ff.add(line, "high", rule, f"sends the secret {secret} over the network: `{snippet}`")
                sent = True
        if sent or not self.secrets:
            return
        line, secret = next(iter(self.secrets.items()))
        if self.raw:
            self.ff.add(line, "high", rule, f"reads {secret} and opens a raw network connection "
                                            f"(line {self.raw[0]}: `{self.raw[1]}`)")
        elif self.unclear and self.send:
            line, secret = next(iter(self.unclear.items()))
            self.ff.add(line, "medium", rule,
                        f"reads {secret} and sends data over the network (line {self.send[0]}: `{self.send[1]}`); "
                        "check the secret only goes to its own service")
