/*
  Covers: string operators on string literals — contains, icontains,
  startswith, istartswith, endswith, iendswith, iequals, ==, !=, string
  comparisons < > (lexicographic), matches with /i and /s regexes, escapes in
  string literals of conditions, empty strings, defined on literal
  expressions.
  Inputs: text.bin (content does not matter).
*/

rule so_contains
{
    condition:
        "Hello World" contains "o W" and not ("Hello World" contains "o w")
}

rule so_icontains
{
    condition:
        "Hello World" icontains "O w" and "abc" icontains ""
}

rule so_startswith
{
    condition:
        "malware.exe" startswith "mal" and not ("malware.exe" startswith "Mal")
}

rule so_istartswith
{
    condition:
        "malware.exe" istartswith "MAL"
}

rule so_endswith
{
    condition:
        "malware.exe" endswith ".exe" and not ("malware.exe" endswith ".EXE")
}

rule so_iendswith
{
    condition:
        "malware.exe" iendswith ".EXE"
}

rule so_iequals
{
    condition:
        "PowerShell" iequals "powershell" and not ("PowerShell" iequals "powershel")
}

rule so_equality
{
    condition:
        "abc" == "abc" and "abc" != "abd" and "" == ""
}

rule so_ordering
{
    condition:
        "abc" < "abd" and "b" > "abc" and "abc" <= "abc" and "abc" >= "ab"
}

rule so_matches
{
    condition:
        "cmd.exe /c whoami" matches /cmd\.exe\s+\/c/ and not ("CMD.EXE" matches /cmd/)
}

rule so_matches_i
{
    condition:
        "CMD.EXE" matches /cmd\.exe/i
}

rule so_matches_s
{
    condition:
        "line1\nline2" matches /line1.line2/s and not ("line1\nline2" matches /line1.line2/)
}

rule so_escapes
{
    condition:
        "tab\there" contains "\t" and "quote\"d" endswith "\"d" and "back\\slash" contains "\\" and "\x41\x42" == "AB"
}

rule so_false
{
    condition:
        "abc" contains "x"
}
