/* Error case: for-of over an undeclared string set (yara 4.2.3 rejects this file; so must we). */
rule a { condition: for any of ($q*) : ( $ ) }
