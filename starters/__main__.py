from starters.cli import main

main()
