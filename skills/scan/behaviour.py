"""What a pack's commands and code do, in code files and in the commands Markdown shows: reverse shells, privilege
escalation and persistence, destructive commands, uploads of piped data, foreign git pushes, DNS exfiltration,
code downloaded or decoded and then run, installs from URLs and foreign indexes, scans of the home folder or the
whole disk, and hard-coded tokens. Line rules report where they match; file rules (`Behaviour.verdict`) combine
lines of one file (a download later made executable, a socket later wired to a shell)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from loopwright.skills.scan.matching import Finder, Lines, described, negated
from loopwright.skills.scan.report import FileFindings, Severity, excerpt


@dataclass(frozen=True)
class LineRule:
    rule: str
    regex: re.Pattern
    keywords: tuple[str, ...]   # a line must hold one of them (lower case) for the regex to be tried there
    what: str
    prose: Severity | None      # severity in Markdown and text (None: not judged there)
    code: Severity | None       # severity in code files
    guarded: bool = True        # in prose, skipped after a negation ("never run `rm -rf ~`")


_I = re.I
_HOME = r"(?:~|\$\{?HOME\}?|%USERPROFILE%|\$env:USERPROFILE)"
_SH = r"(?:/(?:usr/)?bin/)?(?:ba|z|k|da)?sh\b"
_SECRETISH = (r"id_(?:rsa|dsa|ecdsa|ed25519)|\.pem\b|\.key\b|\.p12\b|\.pfx\b|\.kdbx\b|\.env\b|wallet|credential|"
              r"secret|passw|token|api[_-]?key|\.ssh\b|\.aws\b|\.gnupg|keystore|\.ovpn|\.npmrc|\.pypirc|cookies")
_SECRETISH_RE = re.compile(_SECRETISH, _I)

LINE_RULES = (
    # -- reverse shells
    LineRule("reverse-shell", re.compile(
        rf"\b{_SH}[^\n]*?\s-i\b[^\n]*?/dev/(?:tcp|udp)/|/dev/(?:tcp|udp)/\S+[^\n]*?\d?>&\s*\d"
        r"|\bexec\s+\d+<>\s*/dev/(?:tcp|udp)/", _I),
        ("/dev/tcp", "/dev/udp"), "connects a shell to a remote host", "high", "high"),
    LineRule("reverse-shell", re.compile(
        r"(?<![\w-])(?:nc|ncat|netcat|nc\.traditional)\b[^\n|;&]*?\s(?:-[a-zA-Z]*e\b|-c\b|--exec\b|--sh-exec\b)"), (
        "nc", "ncat", "netcat"), "netcat hands a shell to a remote host", "high", "high"),
    LineRule("reverse-shell", re.compile(
        r"\bmkfifo\s+[/\w.$-]+[^\n]{0,80}?\|\s*(?:nc|ncat|netcat|telnet|openssl\s+s_client)\b"
        r"|\bsocat\b[^\n]{0,80}?\b(?:exec|system):"
        rf"|\btelnet\b[^\n]*\|\s*{_SH}", _I),
        ("mkfifo", "socat", "telnet"), "wires a shell to a network connection", "high", "high"),
    LineRule("reverse-shell", re.compile(r"\bssh\b[^\n]*\s-[a-zA-Z]*R\s*(?:\d+:)?(?:localhost|127\.0\.0\.1):\d+", _I),
             ("ssh",), "opens a reverse tunnel that lets a remote host into this machine", "high", "high"),
    LineRule("reverse-shell", re.compile(
        r"(?:fsockopen|\buse\s+socket\b|tcpsocket|socket\.socket|net\.socket|sockets\.tcpclient)"
        r"(?=[^\n]{0,200}?(?:/bin/(?:ba|z)?sh\b|cmd\.exe|\bpty\.spawn|\bexec\s*\(|\bspawn\s*\(|\biex\b|invoke-expression"
        r"|\bpopen\b|\bsystem\s*\(|\bOpen3\b))",
        _I), ("fsockopen", "socket", "tcpsocket", "tcpclient"), "opens a socket and runs a shell on it",
        "high", "high"),
    # -- privilege escalation and persistence
    LineRule("privilege-escalation", re.compile(
        r"\bchmod\s+(?:-\w+\s+)*(?:[ugoa]*\+[rwxXt]*s[rwxXt]*|0?[2467][0-7]{3})(?=\s)", _I),
        ("chmod",), "sets the setuid/setgid bit", "high", "high"),
    LineRule("privilege-escalation", re.compile(
        r"(?:>>?|\btee\b(?:\s+-\w+)*|\bcp\b[^\n]*|\bwrite\w*\s*\(?[^\n]*|\bopen\s*\([^\n]*)\s*[\"']?"
        r"/etc/(?:sudoers(?:\.d/\S*)?|passwd|shadow|group)\b|\bNOPASSWD\s*:", _I),
        ("/etc/sudoers", "/etc/passwd", "/etc/shadow", "/etc/group", "nopasswd"),
        "reads or writes the system's account or sudo configuration", "high", "high"),
    LineRule("privilege-escalation", re.compile(
        r"\busermod\s+(?:-\w+\s+)*-a?G\s+(?:sudo|wheel|admin|root)\b|\buseradd\b[^\n]*\s-u\s*0\b"
        r"|\bsetcap\b[^\n]*cap_(?:setuid|sys_admin|dac_override)|\bsetenforce\s+0\b|\bcsrutil\s+disable\b"
        r"|\bspctl\s+--master-disable\b|\bufw\s+disable\b|-DisableRealtimeMonitoring\s+\$?true"
        r"|\bdocker\s+run\b[^\n]*\s-v\s+/:/", _I),
        ("usermod", "useradd", "setcap", "setenforce", "csrutil", "spctl", "ufw", "-disablerealtimemonitoring",
         "docker"), "raises privileges or switches off a protection", "high", "high"),
    LineRule("persistence", re.compile(
        rf"(?:>>|\btee\s+-a)\s*[\"']?(?:{_HOME}|/root|/home/[\w.-]+)/\.ssh/authorized_keys"
        r"|\b(?:add|append|write|put|insert)\b[^.\n]{0,60}\bauthorized_keys\b", _I),
        ("authorized_keys",), "adds a key that lets someone log in", "high", "high"),
    LineRule("persistence", re.compile(
        r"\|\s*crontab\s+-(?=\s|$|[;&)])|crontab\b[^\n]*(?:curl|wget|/dev/tcp|\bnc\b|base64)"
        r"|(?:\bcurl|\bwget|/dev/tcp|\bnc\b|\bbase64|\bpython3?\s+-c|\bsh\s+-c)[^\n]{0,300}?>>\s*[\"']?"
        rf"{_HOME}/\.(?:bashrc|zshrc|profile|bash_profile|zprofile)\b"
        r"|\balias\s+sudo="
        r"|(?:>|\btee\b|\bcp\b|\bln\s+-s\b)[^\n]*(?:~|\$HOME|\$\{HOME\})/(?:\.local/)?bin/(?:sudo|su|ssh|passwd)\b"
        r"|(?:>|\btee\b|\bcp\b|\bmv\b|\bln\b|launchctl\s+load)[^\n]*Library/Launch(?:Agents|Daemons)/"
        r"|\breg(?:\.exe)?\s+add\b[^\n]*\\CurrentVersion\\Run\b", _I),
        ("crontab", ".bashrc", ".zshrc", ".profile", ".bash_profile", ".zprofile", "alias", "library/launch", "reg",
         "/bin/sudo", "/bin/su", "/bin/ssh", "/bin/passwd"),
        "installs something that runs again later (cron job, shell start-up file)", "high", "high"),
    # -- destructive
    LineRule("destructive-command", re.compile(
        r"\brm\s+(?:-[-\w]+\s+)*(?:-[a-zA-Z]*[rR][a-zA-Z]*|--recursive)\s+(?:-[-\w]+\s+)*"
        rf"(?:--no-preserve-root|[\"']?(?:/|{_HOME}/?|\.\./?\.\.|\.\./?|/(?:home|Users|etc|usr|var|bin|boot|lib|opt|root"
        r"|System)/?)\*?[\"']?(?=[\s;&|)`]|$))"
        rf"|\bfind\s+[\"']?(?:/|{_HOME}/?)[\"']?\s[^\n]*(?:-delete\b|-exec\s+(?:rm|shred)\b)"
        r"|\bmkfs(?:\.\w+)?\s+/dev/|\bdd\b[^\n]*\bof=/dev/(?:sd|nvme|hd|disk|xvd|mmcblk|rdisk)|>\s*/dev/sd[a-z]\b"
        rf"|\bwipefs\s+-|\bshred\s+(?:-\S+\s+)*[\"']?(?:/dev/|{_HOME})|:\(\)\s*\{{\s*:\s*\|\s*:\s*&\s*\}}\s*;\s*:"
        r"|\bRemove-Item\b[^\n]*-Recurse[^\n]*(?:C:\\\s|C:\\$|\$HOME\b|\$env:USERPROFILE|~)"
        r"|\bdel\s+/[sq]\s+/[sq]\s+C:\\"
        r"|\b(?:shutil\.rmtree|rmtree)\s*\(\s*(?:os\.path\.expanduser\(\s*['\"]~/?['\"]\s*\)|Path\.home\(\)|"
        r"['\"](?:/|~/?)['\"]|os\.environ\[\s*['\"]HOME['\"]\s*\]|os\.getenv\(\s*['\"]HOME['\"]\s*\))\s*[,)]"
        r"|\b(?:rmSync|rmdirSync|rimraf\w*|remove|rm)\s*\(\s*(?:os\.homedir\(\)|['\"](?:/|~)['\"]|process\.env\.HOME)"
        r"\s*[,)]"
        r"|\bgit\s+push\s+(?:\S+\s+)*?(?:--force(?!-with-lease)|-f)\b"
        r"|\bDROP\s+(?:SCHEMA|DATABASE)\b"
        r"|\bhistory\s+-c\b|\bunset\s+HISTFILE\b|(?:\brm\b[^\n]*|>\s*)[\"']?(?:~|\$HOME)/\.(?:bash|zsh)_history",
        _I),
        ("rm", "find", "mkfs", "dd", "/dev/sd", "wipefs", "shred", ":()", "remove-item", "del", "rmtree",
         "rmsync", "rmdirsync", "rimraf", "remove", "history", "histfile", "git", "drop"),
        "deletes or overwrites far more than a skill needs (home folder, disk, history, a remote's branch, "
        "a database)",
        "high", "high"),
    # -- exfiltration
    LineRule("data-upload", re.compile(
        r"\|\s*(?:sudo\s+)?curl\b[^\n]*?(?:\s-T\s*[\"']?-|--upload-file\s+[\"']?-|--data(?:-binary|-raw|-urlencode)?"
        r"[\s=][\"']?@-|\s-d\s*[\"']?@-|\s-F\s*[\"']?[\w.-]+=@-)"
        r"|\|\s*(?:nc|ncat|netcat)\s+(?:-\w+\s+)*[\w.-]+\.\w+\s+\d{2,5}|\|\s*openssl\s+s_client\b"
        rf"|\b(?:scp|rsync)\s+(?:-\S+\s+)*[\"']?(?:{_HOME}/?|\.|/)[\"']?\s+\S*@[\w.-]+:", _I),
        ("curl", "nc", "ncat", "netcat", "openssl", "scp", "rsync"),
        "sends piped data or a whole folder to a remote host", "high", "high"),
    LineRule("data-upload", re.compile(
        r"\b(?:send|sendBeacon|fetch|post|src\s*=)[^\n]{0,80}?\b(?:document\.cookie|localStorage|sessionStorage)\b"
        r"(?![ \t]*\.(?:setItem|removeItem|clear)\b)", _I),
        ("send", "fetch", "post", "src"), "sends the page's cookies or local storage to a server", "high", "high"),
    LineRule("foreign-git-push", re.compile(
        r"\bgit\s+push\s+(?:-[-\w=]+\s+)*[\"']?(?:https?://|git@|ssh://|[\w.-]+@[\w.-]+:)", _I),
        ("git",), "pushes the repository to a URL that is not its remote", "high", "high"),
    LineRule("dns-exfiltration", re.compile(
        r"(?<![\w-])(?:dig|nslookup|host|drill)\s+(?:[-+]\S+\s+)*[\"']?[^\s\"';|&]*(?:\$\(|`|\$\{?\w+\}?)"
        r"[^\s\"';|&]*\.[A-Za-z][\w-]*\."
        r"|\b(?:gethostbyname(?:_ex)?|getaddrinfo|resolver\.(?:resolve|query)|dns\.(?:lookup|resolve\w*))\s*\(\s*"
        r"(?:f[\"'][^\"'\n]*\{|`[^`\n]*\$\{|[\w.\[\]()]+\s*\+|[\"'][^\"'\n]*[\"']\s*(?:%|\+)|[^)\n]*\.format\()", _I),
        ("dig", "nslookup", "host", "drill", "gethostbyname", "getaddrinfo", "resolver.", "dns."),
        "looks up a host name built from data (DNS exfiltration)", "high", "high"),
    # -- code downloaded or decoded, then run
    LineRule("remote-code", re.compile(
        r"\.then\s*\(\s*(?:eval|(?:new\s+)?Function|window\.eval|globalThis\.eval)\s*\)"
        r"|\bnew\s+Function\s*\((?=[^\n]{0,200}?(?:fetch|await|response|\.text\(\)|xhr))"
        r"|\bimport\s*\(\s*[\"'`]https?://|\bimportScripts\s*\(\s*[\"'`]https?://", _I),
        (".then", "function", "import", "importscripts"), "runs code fetched from the network", "high", "high"),
    LineRule("remote-code", re.compile(r"\bgo\s+run\s+[\w.-]+\.[a-z]{2,}/\S+@(?:latest|master|main)\b", _I),
             ("go",), "runs code straight from a repository at a moving version", "high", "high"),
    LineRule("obfuscated-code", re.compile(
        r"(?<![.\w])(?:exec|eval|(?-i:Function))\s*\((?=[^\n]{0,200}?(?:zlib\.decompress|gzip\.decompress|lzma\.decompress|bz2\.decompress"
        r"|bytes\.fromhex|codecs\.decode|unhexlify|marshal\.loads|rot.?13|\bchr\s*\(|fromCharCode|\[::-1\]"
        r"|\bunescape\s*\(|Buffer\.from|\\x[0-9a-f]{2}))"
        r"|\bmarshal\.loads\s*\(|__import__\s*\(\s*(?:[\"'][a-z]{1,4}[\"']\s*\+\s*[\"']|[\w.]*(?:b64decode|decode|join|chr)\b)"
        r"|\bgetattr\s*\(\s*(?:__builtins__|builtins|globals\(\))\s*,\s*(?:[\"'][^\"'\n]*[\"']\s*\+|[^)\n]*(?:decode|"
        r"\[::-1\]|join\s*\(|chr\s*\())"
        r"|\b(?:powershell|pwsh)(?:\.exe)?\b[^\n]*\s-(?:e|ec|enc|encodedcommand)\s+[A-Za-z0-9+/=]{16,}"
        r"|FromBase64String[^\n]*(?:\biex\b|invoke-expression)|(?:\biex\b|invoke-expression)[^\n]*FromBase64String"
        rf"|\|\s*(?:rev|tr\s+[^\n|]+)\s*\|\s*{_SH}|\bprintf\s+[\"'](?:\\x[0-9a-f]{{2}}){{4,}}[^\n]*\|\s*{_SH}"
        r"|\b(?:eval|(?:ba)?sh\s+-c)\s+[\"']?\$\((?:echo|printf)[^\n]*(?:base64\s+-d|--decode|xxd\s+-r|\brev\b|\btr\s)"
        r"|[\"'](?:e[\"']\s*\+\s*[\"']val|ev[\"']\s*\+\s*[\"']al|eva[\"']\s*\+\s*[\"']l|e[\"']\s*\+\s*[\"']xec"
        r"|ex[\"']\s*\+\s*[\"']ec|exe[\"']\s*\+\s*[\"']c)[\"']"
        r"|^[ \t]*\w+\s*=\s*(?:builtins\.|__builtins__\.)?(?:exec|eval)[ \t]*(?:$|[;#])"
        r"|\|\s*[a-z]*\$\{?\w*\}?[a-z]*sh\b"
        r"|\[\s*[\"'](?:ev[\"']\s*,\s*[\"']al|ex[\"']\s*,\s*[\"']ec|e[\"']\s*,\s*[\"']val|e[\"']\s*,\s*[\"']xec)[\"']\s*\]"
        r"|\b(?:window|globalThis|self)\s*\[\s*\w+\s*\]\s*\((?=[^\n]{0,200}?(?:atob|fromCharCode|decode|unescape))",
        _I | re.M),
        ("exec", "eval", "function(", "function (", "marshal.", "__import__", "getattr", "powershell", "pwsh",
         "frombase64string", "iex", "invoke-expression", "rev", "tr ", "printf", "sh -c", "'e", '"e', "window[",
         "globalthis[", "self[", "sh"),
        "runs code it hides by encoding, compressing or building it from pieces", "high", "high"),
    # -- dependencies
    LineRule("install-from-url", re.compile(
        r"\b(?:pip3?|pipx|uvx?|poetry|pdm|python3?\s+-m\s+pip)\s+(?:[-\w]+\s+)*?(?:install|add|run|--from|--spec)\b"
        r"[^\n#;`()|&]*?(?:[\s=\"'](?:git\+)?(?:https?|ssh|file)://|\s--(?:extra-)?index-url\b|\s-i\s+https?://"
        r"|\s--trusted-host\b|\s(?:-f|--find-links)[\s=]+https?://)"
        r"|\b(?:npm|pnpm|yarn|bun)\s+(?:i|install|add)\b[^\n#;`()|&]*?(?:\s[\"']?(?:git\+)?(?:https?|ssh|git)://|\sgithub:"
        r"|\sgitlab:|\sbitbucket:|\sgit@|\s--registry[\s=]+https?://|\s[\w-]+/[\w.-]+(?:#[\w.-]+)?(?=\s|$))"
        r"|\bnpx\s+(?:-\S+\s+)*(?:(?:git\+)?https?://|github:|gist:|[\w-]+/[\w.-]+(?:#[\w.-]+)?(?=\s|$))"
        r"|\bcargo\s+install\b[^\n]*\s--git\b|\bgem\s+install\b[^\n]*\s--source\s+https?://", _I),
        ("pip", "pipx", "uv", "poetry", "pdm", "python", "npm", "pnpm", "yarn", "bun", "npx", "cargo", "gem"),
        "installs code from a URL, a repository or a foreign package index (not a pinned release)", "high", "high"),
    LineRule("unpinned-install", re.compile(r"\bnpx\s+(?:-y|--yes)\s+(?:-\S+\s+)*[@\w./-]+@latest\b", _I),
             ("npx",), "runs the latest release of a package, whatever it is today", "medium", "medium"),
    # -- tokens
    LineRule("hardcoded-secret", re.compile(
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{60,}"
        r"|\bxox[abposr]-[0-9A-Za-z-]{24,}|\bsk-ant-[A-Za-z0-9_-]{32,}|\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}"
        r"|\bpypi-AgE[A-Za-z0-9_-]{50,}|\bhf_[A-Za-z0-9]{34,}\b|\bAIza[0-9A-Za-z_-]{35}\b|\bglpat-[0-9A-Za-z_-]{20}\b|\bnpm_[A-Za-z0-9]{36}\b|\b[rs]k_live_[0-9a-zA-Z]{24,}"
        r"|hooks\.slack\.com/services/T\w+/B\w+/\w{20,}|discord(?:app)?\.com/api/webhooks/\d{17,20}/[\w-]{60,}"
        r"|api\.telegram\.org/bot\d{8,10}:[\w-]{35}"),
        ("-----begin", "akia", "asia", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "sk-", "aiza",
         "glpat-", "npm_", "pypi-", "hf_", "rk_live_", "sk_live_", "hooks.slack.com", "discord", "api.telegram.org"),
        "a hard-coded private key, token or webhook URL", "high", "high", guarded=False),
)


_KEY_BODY_RE = re.compile(r"[ \t]*(?:\\n|\r?\n)(?:[\w-]+:[^\n]*\n)*[ \t\"']*[A-Za-z0-9+/]{40,}")


def _real_token(text: str, after: str) -> bool:
    """Placeholders (`sk-ant-xxxx…`, `AKIAIOSFODNN7EXAMPLE`, `<your-token>`) are not tokens; a private key's header
    counts only with a key after it (libraries name the header to parse keys)."""
    low = text.lower()
    if "private key" in low:
        return _KEY_BODY_RE.match(after) is not None
    tail = re.sub(r"^[a-z_]+[-_]", "", text.split("/")[-1])
    if any(w in tail.lower() for w in ("xxxx", "example", "your", "0000", "1234", "abcd", "...", "placeholder",
                                       "redacted")):
        return False
    return sum(c.isdigit() for c in tail) >= 2 and len(set(tail)) >= 10


# -- file rules: signals collected per line, judged when the file ends
_SIGNALS = {
    "download_to": (re.compile(
        r"\bcurl\b[^\n]*\s(?:-o|--output)\s*[\"']?([^\s\"';&|]+)|\bwget\b[^\n]*\s(?:-O|--output-document[= ])\s*"
        r"[\"']?([^\s\"';&|]+)|\bwget\s+(?:-\S+\s+)*[\"']?https?://\S*/([^/\s\"';&|?]+)"
        r"|\b(?:urlretrieve|download_file)\s*\([^,\n]+,\s*[\"']?([^\s\"',)]+)"), ("curl", "wget", "urlretrieve",
                                                                                   "download_file")),
    "run_file": (re.compile(
        r"(?:^|[;&|(`]\s*|\s)(?:(?:ba|z|da)?sh|source|\.|python[\d.]*|node|perl|ruby|pwsh|powershell(?:\.exe)?)"
        r"\s+(?:-\S+\s+)*[\"']?([^\s\"';&|)]+)|(?:^|[;&|]\s*|\s)\./([^\s\"';&|)]+)", re.M),
        ("sh", "source", ". ", "./", "python", "node", "perl", "ruby", "pwsh", "powershell")),
    "chmod_x": (re.compile(
        r"\bchmod\s+(?:-\w+\s+)*(?:[ugoa]*\+[rw]*x|0?[0-7]*[1357][0-7]*)\s+[\"']?([^\s\"';&|]+)"
        r"|\b(?:os\.chmod|chmodSync|fs\.chmod)\s*\(\s*[\"']?([^\s\"',)]+)[^\n]*0o?[0-7]*[1357]"), ("chmod",)),
    "download_call": (re.compile(r"\b(?:urlretrieve|urlopen|requests\.get|httpx\.get|fetch\s*\(|https?\.get\s*\()"),
                      ("urlretrieve", "urlopen", "requests.get", "httpx.get", "fetch", "http.get", "https.get")),
    "run_call": (re.compile(r"\b(?:subprocess\.\w+|os\.system|os\.exec\w*|execFile\w*|spawn\w*|execSync)\s*\("),
                 ("subprocess.", "os.system", "os.exec", "execfile", "spawn", "execsync")),
    "dl_assign": (re.compile(
        r"^[ \t]*(?:const|let|var|my|local|export)?\s*\$?(\w+)\s*=\s*(?:await\s+)?[^\n]*?(?:requests\.get|httpx\.get|"
        r"urlopen|(?<![\w.])fetch\s*\(|axios\.get|urllib\.request|DownloadString|Net::HTTP\.get|URI\.open|\$\((?:curl|wget)\b"
        r"|`(?:curl|wget)\b)", re.M), ("requests.get", "httpx.get", "urlopen", "fetch", "axios.get", "urllib.request",
                                    "downloadstring", "net::http", "uri.open", "curl", "wget")),
    "derive": (re.compile(r"^[ \t]*(?:const|let|var)?\s*(\w+)\s*=\s*(?:await\s+)?\(?\s*(?:await\s+)?(\w+)\s*\)?"
                          r"\.(?:text|content|read|json|data|body|decode)\b", re.M),
               (".text", ".content", ".read", ".data", ".body", ".decode")),
    "vm_run": (re.compile(r"\bvm\.(?:runInThisContext|runInNewContext|runInContext)\s*\(|\bnew\s+vm\.Script\s*\("
                          r"|\.exec_module\s*\(|\brunpy\.run_path\s*\("), ("vm.", "new vm.", ".exec_module", "runpy.")),
    "decode_assign": (re.compile(
        r"^[ \t]*(?:const|let|var|local|export)?\s*\$?(\w+)\s*=\s*[^\n]*?(?:\|\s*(?:rev|base64\s+(?:-d|--decode)"
        r"|xxd\s+-r|tr\s)|\b\w*b(?:64|32|16|85)decode\s*\(|\bdecompress\s*\(|\bfromhex\s*\(|\bunhexlify\s*\(|\bcodecs\.decode\s*\(|\batob\s*\(|"
        r"\[::-1\])", re.M), ("rev", "base64", "xxd", "tr ", "decode", "decompress", "fromhex", "unhexlify",
                             "codecs.decode", "atob", "[::-1]")),
    "exec_var": (re.compile(r"(?<![.\w])(?:exec|eval|(?-i:Function)|compile)\s*\(\s*(\w+)\s*[,)]"
                            r"|\b(?:eval|(?:ba)?sh\s+-c|python3?\s+-c)\s+[\"']?\$\{?(\w+)"),
                 ("exec", "eval", "function", "compile", "sh", "python")),
    "socket": (re.compile(r"\bsocket\.(?:socket|create_connection)\s*\(|\.connect\s*\(\s*\(|\bnet\.(?:Socket|connect|"
                          r"createConnection)\b|\bTcpClient\b", _I),
               ("socket.", ".connect", "net.", "tcpclient")),
    "dup2": (re.compile(r"\bdup2\s*\(\s*[\w.]+\.fileno\(\)\s*,\s*[012]\s*\)"
                        r"|\bstd(?:in|out|err)\s*=\s*[\w.]+\.fileno\(\)|\bpty\.spawn\s*\("),
             ("dup2", "stdin", "stdout", "stderr", "pty.spawn")),
    "shell_pipe": (re.compile(r"\bspawn\s*\(\s*[\"'](?:/bin/)?(?:ba)?sh[\"']|\.std(?:out|in)\.pipe\s*\(|\biex\b|"
                              r"invoke-expression", _I), ("spawn", ".stdout.pipe", ".stdin.pipe", "iex", "invoke-")),
    "remote_add": (re.compile(r"\bgit\s+remote\s+(?:add|set-url)\s+(?:--\S+\s+)*([\w.-]+)\s+[\"']?"
                              r"(?:https?://|git@|ssh://)\S*"), ("git",)),
    "push": (re.compile(r"\bgit\s+push\s+(?:-[-\w=]+\s+)*([\w.-]+)"), ("git",)),
    "walk": (re.compile(
        rf"\bfind\s+[\"']?(?:/|{_HOME}/?|/home|/Users|/root)[\"']?\s[^\n]*-i?(?:name|path|regex)\b"
        rf"|\bgrep\s+-[a-zA-Z]*[rR][^\n]*\s[\"']?(?:/|{_HOME}/?)[\"']?(?=\s|$|[;&|)])"
        r"|\blocate\s+(?:-\w+\s+)*\S*(?:wallet|id_rsa|\.pem|\.kdbx|passw|secret|\.env)"
        r"|\bos\.walk\s*\(\s*(?:os\.path\.expanduser\(\s*['\"]~/?['\"]\s*\)|Path\.home\(\)|['\"](?:/|~|C:\\\\)['\"]"
        r"|os\.environ\[\s*['\"](?:HOME|USERPROFILE)['\"]\s*\]|os\.getenv\(\s*['\"]HOME['\"]\s*\)|home\b)"
        r"|\bPath\.home\(\)\s*\.\s*r?glob\s*\(|\bPath\(\s*['\"](?:/|~)['\"]\s*\)(?:\.expanduser\(\))?\.r?glob\s*\("
        r"|\bglob\.i?glob\s*\(\s*(?:os\.path\.expanduser\(\s*)?['\"](?:~|/)/?\*\*"
        r"|\bglob\.i?glob\s*\(\s*['\"]/(?:home|Users|root)/\*"
        r"|\breaddir(?:Sync)?\s*\(\s*os\.homedir\(\)|\bwalk\w*\s*\(\s*os\.homedir\(\)"
        r"|\b(?:Get-ChildItem|gci|dir)\b(?=[^\n]*\s-Recurse\b)(?=[^\n]*(?:C:\\Users|C:\\(?=[\s\"'])|\$HOME\b|"
        r"\$env:USERPROFILE|\s~(?=[\s\\/]|$)))", _I),
        ("find", "grep", "locate", "os.walk", "path.home", "path(", "glob.", "readdir", "walk", "get-childitem", "gci",
         "dir")),
    "archive_home": (re.compile(rf"\b(?:tar\s+-?[a-zA-Z]*c[a-zA-Z]*|zip\s+-[a-zA-Z0-9]*r[a-zA-Z0-9]*)\s[^\n;&|]*?\s"
                                rf"[\"']?({_HOME}/?|\.|/)[\"']?(?=\s|$|[;&|)])"
                                r"|\bmake_archive\s*\([^\n]*(?:expanduser|Path\.home|getcwd|Path\.cwd|['\"]\.['\"])"),
                     ("tar", "zip", "make_archive")),
    "upload": (re.compile(r"\bcurl\b[^\n]*\s(?:-T|--upload-file|-F|--form|--data-binary)\s|files\s*=\s*\{|"
                          r"\bFormData\b|\b(?:requests|httpx|session|client)\.(?:put|post)\s*\([^\n]*\b(?:data|files)\s*=\s*"
                          r"(?:open|\{)"), ("curl", "files", "formdata", "requests.", "httpx.", "session.", "client.")),
    "secretish": (re.compile(_SECRETISH, _I), ("id_", ".pem", ".key", ".p12", ".pfx", ".kdbx", ".env", "wallet",
                                               "credential", "secret", "passw", "token", "api", ".ssh", ".aws",
                                               ".gnupg", "keystore", ".ovpn", ".npmrc", ".pypirc", "cookies")),
}


class Behaviour:
    """The rules of this module over one file's blocks; `verdict` when the file ends."""

    def __init__(self, ff: FileFindings, name: str):
        self.ff, self.name = ff, name
        self.signals: dict[str, list[tuple[int, str, tuple]]] = {k: [] for k in _SIGNALS}

    def block(self, logical: str, ns: int, lines: Lines, finder: Finder, code: bool) -> None:
        for r in LINE_RULES:
            severity = r.code if code else r.prose
            if severity is None:
                continue
            for m in finder.finditer(r.regex, logical, r.keywords):
                if m.end() <= ns or (r.rule == "hardcoded-secret"
                                     and not _real_token(m.group(), logical[m.end():m.end() + 400])):
                    continue
                if not code and r.guarded and (negated(logical, m.start())
                                               or described(logical, m.start(), quoted=False)):
                    continue
                self.ff.add(lines.at(m.start()), severity, r.rule,
                            f"{r.what}: `{excerpt(logical, m.start(), m.end())}`")
        for key, (regex, words) in _SIGNALS.items():
            found = self.signals[key]
            for m in finder.finditer(regex, logical, words):
                if m.end() > ns and len(found) < 200:
                    found.append((lines.at(m.start()), excerpt(logical, m.start(), m.end(), 60),
                                  tuple(g for g in m.groups() if g)))
        self._requirements(logical, ns, lines)

    def _requirements(self, logical: str, ns: int, lines: Lines) -> None:
        base = posixpath.basename(self.name.lower())
        if base.startswith("requirements") or base.startswith("constraints"):
            regex = re.compile(r"^\s*(?:(?:git\+)?(?:https?|ssh|file)://\S+|[\w.\[\]-]+\s*@\s*(?:git\+)?(?:https?|ssh)://"
                               r"\S+|--(?:extra-)?index-url\s+\S+|--trusted-host\s+\S+|(?:-f|--find-links)\s+https?://"
                               r"\S+)", re.M)
        elif base == "package.json":
            regex = re.compile(r"^\s*\"[@\w./-]+\"\s*:\s*\"(?:(?:git\+)?(?:https?|ssh|git)://|github:|gitlab:|git@)[^\"]*"
                               r"\"", re.M)
        else:
            return
        for m in regex.finditer(logical):
            if m.end() > ns:
                self.ff.add(lines.at(m.start()), "high", "install-from-url",
                            "a dependency from a URL, a repository or a foreign index: "
                            f"`{excerpt(logical, m.start(), m.end())}`")

    def verdict(self, uses_network: bool) -> None:
        s = self.signals
        downloaded = {posixpath.basename(g) for _, _, gs in s["download_to"] for g in gs}
        for line, snippet, gs in s["chmod_x"]:
            if any(posixpath.basename(g) in downloaded for g in gs):
                self.ff.add(line, "high", "remote-code", f"makes a downloaded file executable: `{snippet}`")
        for line, snippet, gs in s["run_file"]:
            if any(posixpath.basename(g) in downloaded for g in gs):
                self.ff.add(line, "high", "remote-code", f"runs a file it downloaded: `{snippet}`")
        for line, snippet, _ in s["chmod_x"]:      # the same, in code: close together, in that order
            got = [d for d, _, _ in s["download_call"] if 0 <= line - d <= 20]
            if got and any(0 <= r - line <= 20 for r, _, _ in s["run_call"]):
                self.ff.add(line, "high", "remote-code",
                            f"downloads a file, makes it executable and runs it (line {got[0]}): `{snippet}`")
                break
        tainted = {gs[0] for _, _, gs in s["dl_assign"] if gs}
        for _ in range(3):
            tainted |= {gs[0] for _, _, gs in s["derive"] if len(gs) == 2 and gs[1] in tainted}
        decoded = {gs[0] for _, _, gs in s["decode_assign"] if gs}
        for line, snippet, gs in s["exec_var"]:
            if gs and gs[0] in tainted:
                self.ff.add(line, "high", "remote-code", f"runs code it downloaded: `{snippet}`")
            elif gs and gs[0] in decoded:
                self.ff.add(line, "high", "obfuscated-code", f"runs code it decoded: `{snippet}`")
        for line, snippet, _ in s["vm_run"]:      # close after a download, as above
            got = [d for d, _, _ in s["download_call"] if 0 <= line - d <= 20]
            if got:
                self.ff.add(line, "high", "remote-code", f"loads and runs code just downloaded (line {got[0]}): "
                                                         f"`{snippet}`")
                break
        if s["socket"] and (s["dup2"] or s["shell_pipe"]):
            line, snippet, _ = (s["dup2"] or s["shell_pipe"])[0]
            self.ff.add(line, "high", "reverse-shell",
                        f"wires a shell's input and output to a socket (line {s['socket'][0][0]}): `{snippet}`")
        remotes = {gs[0]: (line, snippet) for line, snippet, gs in s["remote_add"] if gs}
        for _, _, gs in s["push"]:
            if gs and gs[0] in remotes:
                line, snippet = remotes[gs[0]]
                self.ff.add(line, "high", "foreign-git-push", f"adds a remote and pushes to it: `{snippet}`")
        if s["walk"]:
            line, snippet, _ = s["walk"][0]
            if s["secretish"] or uses_network:
                why = "looks for secrets" if s["secretish"] else "and this file also uses the network"
                self.ff.add(line, "high", "filesystem-scan", f"searches the whole disk or home folder {why}: "
                                                             f"`{snippet}`")
            else:
                self.ff.add(line, "medium", "filesystem-scan", f"searches the whole disk or home folder: `{snippet}`")
        for line, snippet, gs in s["archive_home"]:
            if s["upload"] or (uses_network and gs and gs[0] != "."):
                self.ff.add(line, "high", "data-upload", f"archives a whole folder and this file also uploads: "
                                                         f"`{snippet}`")
                break
