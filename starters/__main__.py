from starters.cli.main import main

main()
