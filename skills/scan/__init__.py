"""Security scan of a skill pack, run when a pack is installed or updated.

`tree.scan_tree(root)` scans every file under a folder; `archives.scan_archive(path)` scans a .zip, .tar,
.tar.gz/.tgz (also .tar.bz2 and .tar.xz) without extracting anything to disk. Both return a `ScanReport` of
`Finding`s, each with the file (inside an archive: ``archive.zip!inner/path``), the line when there is one, a
severity and a rule id. High findings are `ScanReport.blocking`: the installer refuses the pack unless the user
passes ``--allow-risky``.

Rules (severity):

* ``pipe-to-shell`` (high): a download piped into a shell or interpreter (``curl … | sh``, ``wget -qO- … | sudo
  bash``, ``bash <(curl …)``, ``sh -c "$(curl …)"``, ``irm … | iex``, ``iex (iwr …)``), decoded base64 piped into a
  shell, and ``exec``/``eval`` of a download or of decoded data (``exec(urlopen(…).read())``, ``eval(atob(…))``).
  ``curl … | jq``, ``| python3 -m json.tool``, ``| shasum`` and "download to a file, then run it" are not findings.
* ``secret-exfiltration``: judged per file, because the read and the send are usually on different lines.
  - high: a credentials file (``~/.ssh/id_*``, ``~/.aws/credentials``, ``.netrc``, ``.git-credentials``, gh's
    ``hosts.yml``, docker/kube configs, ``.env`` read with cat/open/readFile/``@``, macOS keychain, secret-tool) or
    the whole environment (``env |``, ``os.environ.items()``, ``JSON.stringify(process.env)``, /proc/*/environ) in
    a file that also uses the network;
  - high: an environment secret (``$*_API_KEY``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``… read via ``$NAME``,
    ``os.environ``/``getenv``, ``process.env``, ``$env:``, ``ENV[]``) that flows into a request: on the line of a
    network call outside an auth header, after a body/form/query marker (``-d``, ``data=``, ``json=``, ``body:``,
    ``?x=``), or via a variable assigned from it (and from that one: followed forward through the file); also
    any environment secret in a file that opens a raw connection (nc, /dev/tcp, sockets, smtplib);
  - medium: an environment secret is used somewhere the scan cannot follow (a function argument, a print) in a
    file that also sends data (POST/upload);
  - nothing: reading an API key from the environment for the file's own API use — put in an auth header
    (``Authorization``, ``Bearer``, ``X-…-Token``, ``-H``, ``-u``, ``headers=``, ``api_key=``, ``?key=``) or an SDK
    client (``OpenAI(api_key=…)``, ``gh = Github(token)``), tested in a guard (``if not key:``), or used with
    GET-only network calls. Loading ``.env`` with ``source``/``load_dotenv`` is this case too: what is read from
    it is judged as environment secrets. The scan cannot tell an API's own host from an attacker's, so a key
    put in the auth header of a request to the wrong host is not caught.
  - low: a credentials file read in a file with no network use. In prose (Markdown, text), a credentials path
    counts only with a read verb or command next to it (``cat``, ``read``, ``upload``, ``@``…), so documentation
    that merely names ``~/.aws/credentials`` is not a finding.
* ``hide-from-user``: "do not tell/inform the user", "without telling the user", "hide … from the user", "don't
  mention this", "the user must not know", "silently/secretly <delete|send|upload|run|…>" (imperative only, and not
  after a negation: "never delete files without telling the user" is fine; "fails silently" is fine). High in
  prose; medium in code files, where such words are more often a developer's comment. The "silently" form is
  prose-only.
* ``invisible-unicode``: zero-width characters (U+200B–U+200D, U+2060–U+2064, U+180E, U+FEFF other than a leading
  BOM) and tag characters (U+E0000–U+E007F). Medium in prose; high in code files, in Markdown code fences, and for
  tag characters that spell hidden text (the "ASCII smuggling" of instructions an agent reads and a person cannot
  see). Zero-width joiners inside emoji or between letters of scripts that need them, and emoji tag sequences
  (subdivision flags), are not findings.
* ``bidi-unicode`` (high): U+202A–U+202E, U+2066–U+2069.
* ``encoded-blob`` (medium): base64/base64url or hex runs of >= 200 characters, base64 wrapped over 4+ lines of
  >= 60 characters (bare or as quoted string pieces), and ``\\xNN`` / ``0xNN,`` byte escapes of >= 50 bytes, in
  text files; base64 must look random (mixed case, ~15% digits), so long identifiers and rulers are not blobs.
  A blob whose start decodes to an image, font, PDF or source map is judged by that type and is not a finding;
  one that decodes to an executable is high. Certificates and public keys in PEM blocks are not findings.
* ``executable-binary``: ELF, Mach-O and PE/MZ files are high (judged by magic bytes, whatever the name);
  WebAssembly is medium. Images, fonts and PDFs are fine.
* ``symlink-escape`` (high): a symlink (on disk or an archive member; hard links in tars too) whose target
  resolves outside the pack. Links that stay inside are not findings on disk; inside archives they are
  ``archive-link`` (low), since extraction of links needs care.
* ``archive-path-escape`` (high): a member whose name is absolute (``/…``, ``C:…``) or has a ``..`` component.
* ``archive-bomb`` (high): an archive that declares or expands to more than 200 MB in total (nested archives
  share the allowance), a member or compressed stream that expands more than 100× past 10 MB, or more than
  10,000 members. The member (or the rest of the archive) is not read.
* ``special-file`` (medium): device nodes, FIFOs and sockets (on disk or as tar members); they are not read.
* ``unscanned``: content the scan could not look into: high for an encrypted zip member or an archive nested
  more than one level deep (a pack has no honest reason for either); medium for an unreadable file, a corrupt or
  truncated archive, an unsupported compression or archive format (7z, rar, zstd) or a nested zip over 64 MB.

Whole files are read, never truncated, with bounded memory: files are streamed in 1 MiB chunks, decoded
incrementally, and scanned in blocks of about 1 MiB of text that end at a line break; each block is scanned
together with the last 8 lines (at most 8 KiB) of the previous one, so patterns that span a block boundary are
still found (a line longer than a block is cut into overlapping segments). Findings are deduplicated per file,
rule and line, and at most 20 per file, rule and severity are listed (then one "N more" finding). Each rule's
regex is tried only where one of its keywords occurs (found with str.find), anchored there, so dense or hostile
text costs one short match attempt per keyword, not a regex alternation tried at every character.

A file is text when its first 8 KiB hold no NUL byte (decoded as UTF-8 with errors="replace"; a UTF-16 BOM is
honoured); otherwise it is binary and judged by its magic bytes. Archives are recognised by their magic bytes,
not their names, wherever they are (in the pack, or inside another archive one level deep); they are read in
memory or streamed, never extracted. The scan never follows symlinks, never opens anything but regular files,
and never raises on malformed input: what it cannot read is an ``unscanned`` finding.

Modules: `tree` (a folder on disk: walking, symlinks, special files), `archives` (zip and tar, compressed streams,
nesting, bombs), `text` (one file's bytes: binary or text, and the text rules but one), `exfiltration` (the
secret-exfiltration rule, judged per file), `filetypes` (magic bytes), `matching` (line numbers, keyword-anchored
regex runs), `report` (`Finding`, `ScanReport`, how findings are worded), `limits` (sizes and caps).
"""
