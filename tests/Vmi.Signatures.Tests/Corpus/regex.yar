/*
  Covers: regular expressions — literals, . (with and without /s), character
  classes ([a-z], negated [^...], escapes inside classes, ] and - as literals),
  \w \W \s \S \d \D \b \B, anchors ^ and $, greedy * + ? and lazy *? +? ??,
  {n} {n,} {n,m} {,m} ranges (greedy and lazy), alternation and groups,
  escapes (\. \/ \\ \xNN \t \n), /i and /s flags, and the string modifiers
  nocase, wide, ascii wide, fullword, private on regexes.
  Inputs: regex.bin (main), text.bin.
*/

rule re_literal
{
    strings:
        $r = /GET \/index\.php/
    condition:
        $r
}

rule re_class
{
    strings:
        $r = /[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,4}/
    condition:
        #r >= 2
}

rule re_negated_class
{
    strings:
        $r = /key=[^&;\s]{4,}/
    condition:
        $r
}

rule re_class_specials
{
    strings:
        $r = /[\]\-x]{3}/
        $s = /[\x41-\x43][\d][\w-]/
    condition:
        $r or $s
}

rule re_word_escapes
{
    strings:
        $w = /user\W\w+/
        $s = /token\s+\S+/
        $d = /id=\d{3}\D/
    condition:
        all of them
}

rule re_word_boundary
{
    strings:
        $b = /\bcat\b/
        $nb = /\Bcat\B/
    condition:
        #b >= 1 and #nb >= 1
}

rule re_anchors
{
    strings:
        $start = /^REGEX-INPUT/
        $end = /TRAILER$/
        $mid = /^notatstart/
    condition:
        $start and $end and not $mid
}

rule re_greedy
{
    strings:
        $g = /<tag>.*<\/tag>/
        $p = /ab+c/
        $q = /colou?r/
    condition:
        all of them
}

rule re_lazy
{
    strings:
        $l = /<tag>.*?<\/tag>/
        $p = /ab+?c/
        $q = /x??y/
    condition:
        all of them
}

rule re_ranges
{
    strings:
        $exact = /z{5}/
        $atleast = /q{3,}/
        $between = /m{2,4}/
        $upto = /Ny{,2}N/
        $lazyrange = /k{2,5}?/
    condition:
        all of them
}

rule re_alternation
{
    strings:
        $a = /(cmd|powershell)\.exe/
        $b = /https?:\/\/(www\.)?(example|test)\.(com|org)/
    condition:
        $a and $b
}

rule re_escapes
{
    strings:
        $hex = /\x00\x01[\x02-\x04]/
        $tab = /col1\tcol2/
        $nl = /first\nsecond/
        $bs = /C:\\temp\\/
    condition:
        all of them
}

rule re_flag_i
{
    strings:
        $i = /mixedcase/i
    condition:
        #i >= 2
}

rule re_flag_s
{
    strings:
        $no_s = /begin.end/
        $s = /begin.end/s
    condition:
        $s and not $no_s
}

rule re_flag_is
{
    strings:
        $r = /BEGIN.END/is
    condition:
        $r
}

rule re_nocase_modifier
{
    strings:
        $r = /POWERSHELL\.EXE/ nocase
    condition:
        $r
}

rule re_wide
{
    strings:
        $r = /Wide[0-9]+Regex/ wide
    condition:
        $r
}

rule re_ascii_wide
{
    strings:
        $r = /dual[0-9]regex/ ascii wide
    condition:
        #r >= 2
}

rule re_fullword
{
    strings:
        $r = /admin[0-9]*/ fullword
    condition:
        $r
}

rule re_private
{
    strings:
        $r = /secret-[a-f0-9]{8}/ private
        $v = /visible-[a-f0-9]{8}/
    condition:
        $r and $v
}

rule re_ip
{
    strings:
        $ip = /\b(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\b/
    condition:
        #ip >= 2
}

rule re_dot_binary
{
    strings:
        $r = /\xfe.\xff/
    condition:
        $r
}
