/*
  Covers: external variables defined with -d NAME=VALUE — integers (value is
  an integer when it parses as a decimal number, also negative and leading
  zeros), floats (1.5), booleans (only lowercase true/false), strings
  (everything else, including "0x10", "TRUE" and empty values); externals in
  arithmetic and comparisons; string operators on externals (contains,
  icontains, startswith, istartswith, endswith, iendswith, iequals, matches,
  ==); defined on externals; externals mixed with string matches.
  Needs: -d ext_int=… -d ext_str=… -d ext_bool=… -d ext_float=… -d ext_hexstr=…
  (a missing definition is a compile error: undefined identifier).
  Inputs: text.bin.
*/

rule ex_int_value
{
    condition:
        ext_int == 42
}

rule ex_int_arith
{
    condition:
        ext_int * 2 - 4 == 80 and ext_int % 5 == 2 and ext_int > filesize \ 1000000
}

rule ex_int_negative
{
    condition:
        ext_int < 0
}

rule ex_bool_true
{
    condition:
        ext_bool
}

rule ex_bool_false
{
    condition:
        not ext_bool
}

rule ex_float
{
    condition:
        ext_float > 1.0 and ext_float < 2
}

rule ex_string_eq
{
    condition:
        ext_str == "C:\\Windows\\evil.exe"
}

rule ex_string_contains
{
    condition:
        ext_str contains "evil" and ext_str icontains "WINDOWS"
}

rule ex_string_starts_ends
{
    condition:
        ext_str startswith "C:" and ext_str istartswith "c:\\windows" and ext_str endswith ".exe" and ext_str iendswith ".EXE"
}

rule ex_string_iequals
{
    condition:
        ext_str iequals "c:\\windows\\EVIL.EXE"
}

rule ex_string_matches
{
    condition:
        ext_str matches /\\[a-z]+\.exe$/ and ext_str matches /WINDOWS/i
}

rule ex_string_empty
{
    condition:
        ext_str == ""
}

rule ex_hexstr_is_string
{
    condition:
        ext_hexstr == "0x10"
}

rule ex_defined
{
    condition:
        defined ext_int and defined ext_str
}

rule ex_with_strings
{
    strings:
        $h = "Hello World"
    condition:
        $h and ext_bool and ext_int >= 0
}
