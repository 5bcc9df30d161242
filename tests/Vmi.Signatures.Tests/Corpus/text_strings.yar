/*
  Covers: text strings and their modifiers — ascii, wide, ascii wide, nocase,
  fullword (ascii and wide), private (hidden from -s output but usable),
  combinations (nocase wide fullword), and every escape of a text string:
  \" \\ \t \n \r \xNN (including \x00 and high bytes).
  Inputs: text.bin (main), pe.bin, empty.bin.
*/

rule text_plain
{
    strings:
        $a = "Hello World"
        $b = "scanner"
    condition:
        $a and $b
}

rule text_ascii_explicit
{
    strings:
        $a = "TEST of the" ascii
    condition:
        $a
}

rule text_wide_only
{
    strings:
        $w = "PassWord" wide
    condition:
        $w
}

rule text_ascii_and_wide
{
    strings:
        $aw = "Both" ascii wide
    condition:
        #aw == 2
}

rule text_nocase
{
    strings:
        $n = "mixed case nocase" nocase
        $h = "HELLO" nocase
    condition:
        $n and #h >= 3
}

rule text_nocase_wide
{
    strings:
        $nw = "password" nocase wide
    condition:
        $nw
}

rule text_fullword
{
    strings:
        $f = "hello" fullword
        $g = "world" fullword
    condition:
        $f or $g
}

rule text_fullword_wide
{
    strings:
        $fw = "fullword" wide fullword
        $fa = "fullword" ascii fullword
    condition:
        any of them
}

rule text_private_strings
{
    strings:
        $p = "private_marker" private
        $v = "visible_marker"
    condition:
        $p and $v
}

rule text_only_private
{
    strings:
        $p1 = "private_marker" private
        $p2 = "Hello" private nocase
    condition:
        all of them
}

rule text_escapes_quote_backslash
{
    strings:
        $q = "say \"hi\""
        $path = "C:\\Windows\\System32"
    condition:
        $q and $path
}

rule text_escapes_control
{
    strings:
        $tab = "\tTab\tSeparated\r\n"
        $nl = "line one\nline two"
    condition:
        $tab and $nl
}

rule text_escapes_hex
{
    strings:
        $nul = "\x00\x01\x02\x03"
        $hi = "\x7f\x80\xfe\xff"
        $mixed = "A\x42C\x44"
    condition:
        all of them
}

rule text_nocase_wide_fullword_combo
{
    strings:
        $c = "combo" nocase wide ascii fullword
    condition:
        #c >= 2
}

rule text_not_found
{
    strings:
        $x = "this string is nowhere in the inputs"
    condition:
        $x
}

rule text_negative_fullword
{
    strings:
        $x = "ell" fullword
    condition:
        not $x
}
