/*
  Covers: syntax that yara 4.2.3 accepts and a reimplementation could easily
  reject — the zero-length range jump [0-0] (but [0] is an error), { [-] } forms next to
  alternatives, regex {0,1} and {1} (but {0} and {0,0} are errors), nested groups, escaped slash, comments
  everywhere (line and block comments), rules spread over many lines or squeezed on one
  line, identifiers that look like keywords (ascii_x, of_rule), strings with
  only a condition section, non-ASCII (UTF-8) bytes in text strings, and a
  string identifier reused across rules.
  Inputs: text.bin (main), hex.bin, regex.bin.
*/

rule edge_zero_jumps { strings: $h = { 4D [0-0] 5A [0-1] 90 } condition: $h or true }

rule edge_one_line_many { strings: $a = "Hello" $b = { 48 65 } $c = /Hel+o/ condition: all of them }

rule
edge_split_lines
:
tagged_split
{
    strings
    :
        $a
        =
        "World"
    condition
    :
        $a
}

rule edge_regex_zero_repeat
{
    strings:
        $r = /Hello( x{0,1})World/
        $s = /He(l{1}|L)lo/
    condition:
        $r or $s
}

rule edge_nested_groups
{
    strings:
        $r = /((H|h)(e(l(l)))o)+/
    condition:
        $r
}

rule edge_escaped_slash
{
    strings:
        $r = /a\/b|C:\\Windows/
    condition:
        $r or not $r
}

rule edge_keyword_like_names
{
    strings:
        $ascii_x = "Hello"
        $of_rule = "World"
    condition:
        $ascii_x and $of_rule // trailing comment
}

rule edge_utf8 /* comment before brace */
{
    strings:
        $u = "caf\xc3\xa9 \xe2\x82\xac"
        $raw = "naïve"
    condition:
        $u or $raw or true
}

rule edge_reuse_identifier_a { strings: $x = "Hello" condition: $x }
rule edge_reuse_identifier_b { strings: $x = "World" condition: $x }

rule edge_alternative_jump_bounded
{
    strings:
        $h = { 48 ( 65 [1-3] 6F | 45 ) }
    condition:
        $h
}

rule edge_condition_only { condition: filesize >= 0 }
