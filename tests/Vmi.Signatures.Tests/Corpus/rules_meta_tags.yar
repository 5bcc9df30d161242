/*
  Covers: include "relative/path.yar"; metadata of every type (strings with
  escapes and \xNN bytes, printed back by -m as C escapes \" \' \\ \n \t \r \v
  \a \b \f or octal \NNN; positive/negative integers; true/false); tags
  printed by -g and filtered by -t; rule selection by -i; global rules (a failing
  global rule makes every rule of its namespace fail, also under -n); private
  rules (never printed, not even with -n, but usable in conditions); rule
  references (a rule used in another's condition, including a private and an
  included rule); rules without strings; rule names with digits/underscores.
  Inputs: text.bin (main), pe.bin, empty.bin.
*/

include "include/common.yar"

global rule gl_not_empty
{
    condition:
        filesize > 0
}

rule meta_all_types : family_a trojan
{
    meta:
        author = "Vmi \"tests\""
        description = "tab\there, backslash \\ and newline\n"
        reference = "https://example.com/yara?x=1&y=2"
        date = "2024-01-31"
        version = 3
        score = -10
        big = 1099511627776
        enabled = true
        disabled = false
        hash = "d41d8cd98f00b204e9800998ecf8427e"
        bytes = "caf\xc3\xa9 \x01\x7f end"
        c_escapes = "it's \r cr \x0b vt \x07 bel \x08 bs \x0c ff \x1b esc"
    strings:
        $a = "Hello World"
    condition:
        $a
}

rule no_meta_tagged : trojan
{
    strings:
        $t = "TEST"
    condition:
        $t
}

rule meta_untagged
{
    meta:
        note = "plain"
    condition:
        true
}

private rule priv_has_scanner
{
    strings:
        $s = "scanner"
    condition:
        $s
}

rule uses_private : family_b
{
    condition:
        priv_has_scanner and meta_untagged
}

rule uses_included
{
    condition:
        inc_tagged and (no_meta_tagged or not no_meta_tagged)
}

rule never_matches : family_a
{
    meta:
        why = "always false"
    condition:
        false
}

rule negated_reference
{
    condition:
        not never_matches
}

rule Rule_2_with_Digits99 : TagCase
{
    condition:
        uses_private or never_matches
}
